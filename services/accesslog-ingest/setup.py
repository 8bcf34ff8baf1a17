"""Builds the compiled ALS hot path, `lazyload_accesslog_ingest._wire` (Cython), with the package.

The extension is optional: where no C compiler is found the build goes on without it and the
service decodes with the protobuf runtime instead (`parsing.COMPILED` says which one runs).
Everything else is declared in pyproject.toml.
"""

# Cython and setuptools are build requirements (pyproject [build-system]), not in the main .venv:
# pyright: reportMissingImports=false, reportMissingModuleSource=false

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [
            Extension(
                "lazyload_accesslog_ingest._wire",
                ["src/lazyload_accesslog_ingest/_wire.pyx"],
                optional=True,
                extra_compile_args=["-O2"],
            )
        ],
        compiler_directives={"language_level": "3"},
    )
)

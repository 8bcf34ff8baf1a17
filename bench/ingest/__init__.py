"""Ingest throughput benchmark (issue 3 "Measured", issue 8 item 1): `python -m bench.ingest`.

`run(small=False, workdir=None) -> dict` is what `python -m bench` calls; `main(argv)` is the
command line. See `throughput.py`.
"""

from bench.ingest.throughput import main, run

__all__ = ["main", "run"]

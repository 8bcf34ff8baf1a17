"""lazyload benchmark suite: `python -m bench` (`--small` for the tiny configuration).

Each benchmark is a module with `run(config, workdir) -> dict` (its results, JSON-serialisable)
and `rows(result) -> list[tuple[str, str, str]]` (what the summary table prints).
"""

"""lazyload_cli."""

"""lazyload_common."""

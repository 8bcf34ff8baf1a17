"""lazyload_global_pilot."""

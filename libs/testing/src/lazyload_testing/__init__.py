"""lazyload_testing."""

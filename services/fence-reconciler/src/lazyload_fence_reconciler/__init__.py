"""lazyload_fence_reconciler."""

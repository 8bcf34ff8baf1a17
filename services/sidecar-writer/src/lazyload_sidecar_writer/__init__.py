"""lazyload_sidecar_writer."""

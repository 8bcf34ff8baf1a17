"""lazyload_accesslog_ingest."""

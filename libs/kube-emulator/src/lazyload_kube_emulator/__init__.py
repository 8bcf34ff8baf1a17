"""lazyload_kube_emulator."""

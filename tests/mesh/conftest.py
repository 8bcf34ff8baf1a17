"""lazyload in the real-Istio rig (module scope): see lazyload_testing.mesh_lazyload."""

from lazyload_testing.mesh_lazyload import lazyload_in_mesh

__all__ = ["lazyload_in_mesh"]

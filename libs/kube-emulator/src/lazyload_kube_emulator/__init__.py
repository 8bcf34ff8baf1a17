"""lazyload_kube_emulator: a local Kubernetes API emulator.

It is not a real API server: it keeps objects in memory and speaks the Kubernetes REST shape
(discovery, CRUD, patch, watch, CRDs with schemas and a status subresource) well enough for the
official Python client and kubectl. Start one with `EmulatorServer` (asyncio), `run_in_thread`
(sync context manager) or the `lazyload-kube-emulator` command.
"""

from .admin_client import AdminClient
from .app import create_app
from .config import EmulatorConfig
from .emulator import Emulator
from .faults import FaultSpec, RequestRecord
from .kubeconfig import CONTEXT, kubeconfig_dict, write_kubeconfig
from .server import EmulatorHandle, EmulatorServer, run_in_thread

__all__ = [
    "CONTEXT",
    "AdminClient",
    "Emulator",
    "EmulatorConfig",
    "EmulatorHandle",
    "EmulatorServer",
    "FaultSpec",
    "RequestRecord",
    "create_app",
    "kubeconfig_dict",
    "run_in_thread",
    "write_kubeconfig",
]

"""`dispatches`: Slime's custom traffic dispatch (the model lives in `lazyload_common.dispatches`,
shared with fence-reconciler, which must not learn hosts that a dispatch sends elsewhere)."""

from __future__ import annotations

from lazyload_common.dispatches import (
    GLOBAL_SIDECAR,
    ISTIO_PASSTHROUGH,
    PASSTHROUGH,
    Dispatch,
    dispatch_of,
)

__all__ = ["GLOBAL_SIDECAR", "ISTIO_PASSTHROUGH", "PASSTHROUGH", "Dispatch", "dispatch_of"]

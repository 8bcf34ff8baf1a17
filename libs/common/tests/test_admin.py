"""The admin app's readiness, served on a real port: every named check must pass, and a check not
set yet counts as not ready."""

from __future__ import annotations

import httpx
from lazyload_common import admin


async def test_readiness_names_every_check_and_fails_until_all_pass() -> None:
    state = admin.Readiness(("nats", "kube"))
    server = admin.AdminServer(admin.create_admin_app("test", readiness=state), "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            first = await http.get("/readyz")
            assert first.status_code == 503
            assert first.json()["checks"] == {"nats": False, "kube": False}
            state["nats"] = lambda: True
            state["kube"] = lambda: False
            assert (await http.get("/readyz")).status_code == 503
            state["kube"] = lambda: True
            ready = await http.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["checks"] == {"nats": True, "kube": True}
            assert (await http.get("/healthz")).json() == {"status": "ok", "service": "test"}
    finally:
        await server.stop()

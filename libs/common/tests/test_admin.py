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


async def test_the_token_may_come_in_the_header_the_pod_proxy_lets_through(tmp_path) -> None:
    """The API server's pod proxy removes `Authorization`: a reset sent through it carries its
    bearer token in `X-Lazyload-Authorization`, checked the same way (a wrong one is refused)."""
    from fastapi import APIRouter, Depends
    from lazyload_common import adminauth
    from lazyload_common.settings import AdminSettings

    (tmp_path / "token").write_text("s3cret\n")
    settings = AdminSettings(host="127.0.0.1", port=0, auth="token", token_file=tmp_path / "token")
    guard = adminauth.AdminGuard(settings)
    router = APIRouter()
    action = adminauth.Action("update", "microservice.slime.io", "servicefences", "status")

    @router.post("/change/{namespace}", dependencies=[Depends(guard.require(action))])
    def change(namespace: str) -> dict[str, str]:
        return {"changed": namespace}

    app = admin.create_admin_app("test", readiness=admin.Readiness(()), routers=[router])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as http:
        proxied = {adminauth.PROXIED_AUTHORIZATION: "Bearer s3cret"}
        assert (await http.post("/change/default", headers=proxied)).json() == {
            "changed": "default"
        }
        wrong = {adminauth.PROXIED_AUTHORIZATION: "Bearer guess"}
        assert (await http.post("/change/default", headers=wrong)).status_code == 401
        assert (await http.post("/change/default")).status_code == 401

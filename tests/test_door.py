"""The door page's files: served by the app from the package, with a CSP of their own, and outside the
OpenAPI document. (The page itself runs in a real browser in tests/browser.)"""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tickets.door import ASSETS, DOOR_DIR


async def test_door_page_is_served_with_its_own_policy(client: httpx.AsyncClient) -> None:
    r = await client.get("/door")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script src="/door/door.js" defer></script>' in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "script-src 'self'" in csp
    assert "connect-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert "camera=(self)" in r.headers["permissions-policy"]


async def test_every_asset_ships_and_is_served(client: httpx.AsyncClient) -> None:
    for name, media_type in ASSETS.items():
        assert (DOOR_DIR / name).is_file(), name
        r = await client.get(f"/door/{name}")
        assert r.status_code == 200, name
        assert r.headers["content-type"] == media_type
        assert r.headers["content-security-policy"].startswith("default-src 'self'")
    r = await client.get("/door/sw.js")
    assert r.headers["service-worker-allowed"] == "/door"
    # The bundled decoder comes with its licence.
    assert "Apache License" in (DOOR_DIR / "jsQR.LICENSE.txt").read_text()


async def test_nothing_else_is_reachable(client: httpx.AsyncClient) -> None:
    for path in ("/door/index.py", "/door/..%2Fdoor.py", "/door/%2e%2e/main.py", "/doorway"):
        r = await client.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"] == "application/problem+json"
    # Paths that merely start with "door" keep the API's strict policy.
    assert (await client.get("/doorway")).headers["content-security-policy"].startswith("default-src 'none'")


def test_door_is_not_in_the_api_document(app: FastAPI) -> None:
    assert not [p for p in app.openapi()["paths"] if p.startswith("/door")]

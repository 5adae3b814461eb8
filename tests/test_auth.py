"""Every route declares who may call it; this walks each route with each credential."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import make_settings
from tests.factories import on_sale_theatre, order_body
from tests.support import asgi_client, running_app, scratch_database
from tickets.auth import service as auth_service
from tickets.auth.models import Role
from tickets.migrate import upgrade_to_head

# Who may call each route: public, buyer (the order's token, or box office and above), door,
# box_office, admin; stripe (the webhook, authenticated by its signature instead of a key). A route missing here fails test_every_route_is_classified.
ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "public",
    ("GET", "/readyz"): "public",
    ("GET", "/metrics"): "public",
    ("POST", "/v1/galas"): "admin",
    ("GET", "/v1/galas"): "public",
    ("GET", "/v1/galas/{gala_id}"): "public",
    ("PATCH", "/v1/galas/{gala_id}"): "admin",
    ("POST", "/v1/galas/{gala_id}/publish"): "admin",
    ("POST", "/v1/galas/{gala_id}/close"): "admin",
    ("POST", "/v1/galas/{gala_id}/cancel"): "admin",
    ("POST", "/v1/galas/{gala_id}/sections"): "admin",
    ("GET", "/v1/galas/{gala_id}/sections"): "public",
    ("PATCH", "/v1/galas/{gala_id}/sections/{section_id}"): "admin",
    ("DELETE", "/v1/galas/{gala_id}/sections/{section_id}"): "admin",
    ("POST", "/v1/galas/{gala_id}/sections/{section_id}/seats"): "admin",
    ("DELETE", "/v1/galas/{gala_id}/seats/{seat_id}"): "admin",
    ("GET", "/v1/galas/{gala_id}/seats"): "public",
    ("POST", "/v1/galas/{gala_id}/seats/block"): "admin",
    ("POST", "/v1/galas/{gala_id}/seats/unblock"): "admin",
    ("POST", "/v1/galas/{gala_id}/ticket-types"): "admin",
    ("GET", "/v1/galas/{gala_id}/ticket-types"): "public",
    ("GET", "/v1/galas/{gala_id}/ticket-types/{ticket_type_id}"): "public",
    ("PATCH", "/v1/galas/{gala_id}/ticket-types/{ticket_type_id}"): "admin",
    ("DELETE", "/v1/galas/{gala_id}/ticket-types/{ticket_type_id}"): "admin",
    ("POST", "/v1/galas/{gala_id}/promo-codes"): "admin",
    ("GET", "/v1/galas/{gala_id}/promo-codes"): "admin",
    ("PATCH", "/v1/galas/{gala_id}/promo-codes/{promo_code_id}"): "admin",
    ("POST", "/v1/orders"): "public",
    ("GET", "/v1/orders"): "box_office",
    ("GET", "/v1/orders/{order_id}"): "buyer",
    ("POST", "/v1/orders/{order_id}/cancel"): "buyer",
    ("POST", "/v1/comp-orders"): "box_office",
    ("GET", "/v1/orders/{order_id}/tickets"): "buyer",
    ("GET", "/v1/tickets/{ticket_id}"): "buyer",
    ("PATCH", "/v1/tickets/{ticket_id}"): "buyer",
    ("POST", "/v1/tickets/{ticket_id}/transfer"): "buyer",
    ("GET", "/v1/tickets/{ticket_id}/qr.png"): "buyer",
    ("GET", "/v1/tickets/{ticket_id}/qr.svg"): "buyer",
    ("GET", "/v1/orders/{order_id}/tickets.pdf"): "buyer",
    ("POST", "/v1/orders/{order_id}/resend"): "buyer",
    ("POST", "/v1/orders/lookup"): "public",
    ("POST", "/v1/scans"): "door",
    ("POST", "/v1/scans/batch"): "door",
    ("POST", "/v1/scans/{scan_id}/undo"): "door",
    ("GET", "/v1/galas/{gala_id}/checkin-stats"): "door",
    ("GET", "/v1/galas/{gala_id}/scan-sync"): "door",
    ("POST", "/v1/orders/{order_id}/refunds"): "admin",
    ("GET", "/v1/orders/{order_id}/refunds"): "admin",
    ("POST", "/v1/payments/stripe/webhook"): "stripe",
    ("POST", "/v1/webhook-endpoints"): "admin",
    ("GET", "/v1/webhook-endpoints"): "admin",
    ("GET", "/v1/webhook-endpoints/{endpoint_id}"): "admin",
    ("DELETE", "/v1/webhook-endpoints/{endpoint_id}"): "admin",
    ("GET", "/v1/webhook-endpoints/{endpoint_id}/deliveries"): "admin",
    ("GET", "/v1/webhook-deliveries/{delivery_id}"): "admin",
    ("POST", "/v1/webhook-deliveries/{delivery_id}/replay"): "admin",
    ("GET", "/v1/galas/{gala_id}/attendees"): "admin",
    ("GET", "/v1/galas/{gala_id}/stats"): "admin",
    ("POST", "/v1/api-keys"): "admin",
    ("GET", "/v1/api-keys"): "admin",
    ("GET", "/v1/api-keys/{key_id}"): "admin",
    ("DELETE", "/v1/api-keys/{key_id}"): "admin",
}

RANK = {"none": 0, "door": 1, "box_office": 2, "admin": 3}
REQUIRED_RANK = {"stripe": 0, "public": 0, "door": 1, "box_office": 2, "buyer": 2, "admin": 3}


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every operation of the OpenAPI document (which lists every route the app serves)."""
    return {(method.upper(), path) for path, ops in app.openapi()["paths"].items() for method in ops}


def test_every_route_is_classified(app: FastAPI) -> None:
    routes = app_routes(app)
    assert routes == set(ROUTES), {"unclassified": routes - set(ROUTES), "stale": set(ROUTES) - routes}


@pytest.fixture(scope="module")
async def objects(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    gala, tier, seats = await on_sale_theatre(client, admin, price=0)
    order = (
        await client.post(
            "/v1/orders", json=order_body(gala["id"], [{"ticket_type_id": tier["id"], "seat_id": seats["A1"]}])
        )
    ).json()
    token = order["access_token"]
    tickets = (await client.get(f"/v1/orders/{order['id']}/tickets", headers={"X-Order-Token": token})).json()["data"]
    return {
        "gala_id": gala["id"],
        "order_id": order["id"],
        "ticket_id": tickets[0]["id"],
        "token": token,
        "section_id": "sec_" + "x" * 20,
        "seat_id": "seat_" + "x" * 20,
        "ticket_type_id": tier["id"],
        "promo_code_id": "prm_" + "x" * 20,
        "key_id": "key_" + "x" * 20,
        "scan_id": "scn_" + "x" * 20,
        "endpoint_id": "whe_" + "x" * 20,
        "delivery_id": "whd_" + "x" * 20,
    }


def fill(path: str, objects: dict[str, Any]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(objects[m.group(1)]), path)


async def test_roles_on_every_route(
    client: httpx.AsyncClient,
    objects: dict[str, Any],
    admin: dict[str, str],
    box: dict[str, str],
    door: dict[str, str],
) -> None:
    credentials = {"none": {}, "door": door, "box_office": box, "admin": admin}
    failures = []
    for (method, path), required in sorted(ROUTES.items()):
        url = fill(path, objects)
        body = {} if method in ("POST", "PATCH") else None
        for name, headers in credentials.items():
            r = await client.request(method, url, json=body, headers=headers)
            allowed = RANK[name] >= REQUIRED_RANK[required]
            if allowed and r.status_code in (401, 403):
                failures.append(f"{name} refused on {method} {path}: {r.status_code} {r.text[:120]}")
            if not allowed:
                expected = 401 if name == "none" else 403
                if r.status_code != expected:
                    failures.append(f"{name} not refused on {method} {path}: {r.status_code} {r.text[:120]}")
        # A wrong key is 401 on every API route, public ones included (probes are not API routes).
        r = await client.request(method, url, json=body, headers={"Authorization": "Bearer tk_not-a-real-key"})
        if (
            path.startswith("/v1/")
            and required != "stripe"
            and (r.status_code != 401 or r.json()["code"] != "invalid_api_key")
        ):
            failures.append(f"wrong key on {method} {path}: {r.status_code}")
        if required == "buyer":
            r = await client.request(method, url, json=body, headers={"X-Order-Token": objects["token"]})
            if r.status_code in (401, 403):
                failures.append(f"buyer refused on {method} {path}: {r.status_code}")
    assert not failures, "\n".join(failures)


async def test_keys_are_hashed_shown_once_and_revocable(
    client: httpx.AsyncClient, admin: dict[str, str], box: dict[str, str]
) -> None:
    r = await client.post("/v1/api-keys", json={"name": "West door", "role": "door"}, headers=admin)
    assert r.status_code == 201
    created = r.json()
    plain = created["key"]
    assert created["prefix"] == plain[:10]
    listed = (await client.get(f"/v1/api-keys/{created['id']}", headers=admin)).json()
    assert "key" not in listed and "key_hash" not in listed
    door_headers = {"Authorization": f"Bearer {plain}"}
    assert (await client.get("/v1/galas", headers=door_headers)).status_code == 200
    assert (await client.post("/v1/api-keys", json={"name": "x", "role": "door"}, headers=box)).status_code == 403
    r = await client.delete(f"/v1/api-keys/{created['id']}", headers=admin)
    assert r.status_code == 200 and r.json()["revoked_at"]
    r = await client.get("/v1/galas", headers=door_headers)
    assert r.status_code == 401 and r.json()["code"] == "invalid_api_key"
    r = await client.get("/v1/galas", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401


async def test_expired_key_is_refused(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    r = await client.post(
        "/v1/api-keys", json={"name": "old", "role": "admin", "expires_at": "2020-01-01T00:00:00Z"}, headers=admin
    )
    assert r.status_code == 201
    r = await client.get("/v1/galas", headers={"Authorization": f"Bearer {r.json()['key']}"})
    assert r.status_code == 401


async def test_gala_limited_key(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    mine, tier, seats = await on_sale_theatre(client, admin, price=0)
    other, _, _ = await on_sale_theatre(client, admin, price=0)
    r = await client.post(
        "/v1/api-keys", json={"name": "one gala", "role": "admin", "gala_ids": [mine["id"]]}, headers=admin
    )
    limited = {"Authorization": f"Bearer {r.json()['key']}"}
    assert (await client.patch(f"/v1/galas/{mine['id']}", json={"title": "Mine"}, headers=limited)).status_code == 200
    r = await client.patch(f"/v1/galas/{other['id']}", json={"title": "Theirs"}, headers=limited)
    assert r.status_code == 403 and r.json()["code"] == "gala_not_allowed"
    listed = (await client.get("/v1/galas", params={"limit": 200}, headers=limited)).json()
    assert [g["id"] for g in listed["data"]] == [mine["id"]]
    r = await client.post("/v1/galas", json={"title": "New"}, headers=limited)
    assert r.status_code in (403, 422)
    r = await client.get("/v1/orders", params={"gala_id": other["id"]}, headers=limited)
    assert r.status_code == 403


def test_cli_create_api_key_prints_key_last(database_url: str, tmp_path: Any) -> None:
    env = {"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin", "SECRET_KEY": "x" * 40}
    out = subprocess.run(
        [sys.executable, "-m", "tickets.cli", "create-api-key", "--role", "admin", "--name", "First admin"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    )
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[-1].startswith("tk_") and len(lines[-1]) > 40
    key = lines[-1]
    assert key not in out.stderr  # the key is never logged
    import sqlalchemy as sa

    from tickets.auth.service import hash_key
    from tickets.config import sync_database_url

    engine = sa.create_engine(sync_database_url(database_url))
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT key_hash FROM api_key WHERE name = 'First admin'")).scalars().all()
    engine.dispose()
    assert stored == [hash_key(key)] and key not in stored


async def test_a_revoked_key_is_refused_by_every_worker_at_once(tmp_path: Any) -> None:
    """Two app instances (two workers) on one PostgreSQL database, each keeping keys for a minute: the
    revocation made through one reaches the other's cache through the database's notifications.
    (PostgreSQL in both runs of the suite: SQLite has no notifications; there the cache's short
    lifetime is the bound.)"""
    server = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    with scratch_database(server, tmp_path) as url:
        upgrade_to_head(url)
        s = make_settings(url, tmp_path, api_key_cache_seconds=60)
        async with running_app(s) as one, running_app(s) as two:
            async with one.state.db.sessions() as session:
                _, plain = await auth_service.create_api_key(session, name="root", role=Role.admin)
                await session.commit()
            root = {"Authorization": f"Bearer {plain}"}
            async with asgi_client(one) as a, asgi_client(two) as b:
                created = (await a.post("/v1/api-keys", json={"name": "temp", "role": "admin"}, headers=root)).json()
                temp = {"Authorization": f"Bearer {created['key']}"}
                assert (await b.get("/v1/api-keys", headers=temp)).status_code == 200  # now in two's cache
                assert (await a.delete(f"/v1/api-keys/{created['id']}", headers=root)).status_code == 200
                assert (await a.get("/v1/api-keys", headers=temp)).status_code == 401
                statuses = []
                for _ in range(50):  # the notification travels through the database: allow it 5 s
                    statuses.append((await b.get("/v1/api-keys", headers=temp)).status_code)
                    if statuses[-1] == 401:
                        break
                    await asyncio.sleep(0.1)
                assert statuses[-1] == 401, statuses
                assert (await b.get("/v1/api-keys", headers=root)).status_code == 200

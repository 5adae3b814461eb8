"""Outgoing webhooks against a real HTTP receiver on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.conftest import make_settings
from tests.factories import add_general, add_ticket_type, create_gala, order_body, publish
from tests.support import asgi_client, free_port, running_app
from tickets.clock import utc_now
from tickets.config import Settings
from tickets.db import Database
from tickets.orders import service as orders_service
from tickets.webhooks import service as webhooks_service


@dataclass
class Receiver:
    url: str
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)  # event type -> answers of 503 still to give


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    rec = Receiver(url=f"http://127.0.0.1:{port}/hook")

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        rec.received.append((dict(request.headers), body))
        event_type = request.headers.get("Tickets-Event-Type", "")
        if rec.fail.get(event_type, 0) > 0:
            rec.fail[event_type] -= 1
            return web.Response(status=503)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield rec
    await runner.cleanup()


@pytest.fixture
async def private_ok(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Settings, Any]]:
    """The app with WEBHOOK_ALLOW_PRIVATE_URLS=true (our receiver is on loopback)."""
    s = make_settings(settings.database_url, settings.data_dir, webhook_allow_private_urls=True)
    async with running_app(s) as app, asgi_client(app, "http://hooks") as c:
        yield c, s, app


def verify(headers: dict[str, str], body: bytes, secret: str) -> bool:
    parts = dict(p.split("=", 1) for p in headers["Tickets-Signature"].split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) < 300


async def drain(db: Database, settings: Settings, keys: Any, *, at: Any = None) -> None:
    # The shared test database holds every other test's events too: fan them all out.
    while await webhooks_service.fan_out(db, now=at):
        pass
    while await webhooks_service.deliver_due(db, settings, keys, now=at):
        if at is not None:
            break


async def test_private_urls_are_refused_by_default(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    for url in (
        "http://127.0.0.1:9/hook",
        "http://10.1.2.3/x",
        "http://localhost/x",
        "http://[::1]/x",
        "ftp://example.org/x",
    ):
        r = await client.post("/v1/webhook-endpoints", json={"url": url, "events": ["order.paid"]}, headers=admin)
        assert r.status_code == 422, (url, r.text)
    r = await client.post(
        "/v1/webhook-endpoints", json={"url": "http://93.184.215.14/x", "events": ["nope"]}, headers=admin
    )
    assert r.status_code == 422


async def test_events_are_signed_retried_logged_and_replayable(
    private_ok: tuple[httpx.AsyncClient, Settings, Any], admin: dict[str, str], receiver: Receiver, db: Database
) -> None:
    c, settings, app = private_ok
    keys = app.state.keys
    gala = await create_gala(c, admin)
    floor = await add_general(c, admin, gala["id"], 2)
    tier = await add_ticket_type(c, admin, gala["id"], [floor["id"]], price_amount=0)
    await publish(c, admin, gala["id"])
    r = await c.post(
        "/v1/webhook-endpoints",
        json={"url": receiver.url, "events": ["order.paid", "gala.sold_out", "order.refunded"], "gala_id": gala["id"]},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    endpoint = r.json()
    assert endpoint["secret"].startswith("whsec_")

    receiver.fail["order.paid"] = 1
    order = (
        await c.post("/v1/orders", json=order_body(gala["id"], [{"ticket_type_id": tier["id"], "quantity": 2}]))
    ).json()
    assert order["status"] == "paid"
    await drain(db, settings, keys)
    assert len(receiver.received) == 2  # order.paid failed once (503), gala.sold_out delivered
    deliveries = (await c.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=admin)).json()["data"]
    by_type = {d["event_type"]: d for d in deliveries}
    assert set(by_type) == {"order.paid", "gala.sold_out"}
    paid = by_type["order.paid"]
    assert paid["status"] == "pending" and paid["attempts"] == 1 and paid["last_status_code"] == 503
    assert datetime.fromisoformat(paid["next_attempt_at"]) - utc_now() <= timedelta(seconds=30)  # first retry soon

    await drain(db, settings, keys, at=utc_now() + timedelta(seconds=31))
    paid = (await c.get(f"/v1/webhook-deliveries/{paid['id']}", headers=admin)).json()
    assert paid["status"] == "succeeded" and paid["attempts"] == 2
    assert [a["status_code"] for a in paid["log"]] == [503, 204]

    bodies = [(h, b) for h, b in receiver.received if h["Tickets-Event-Type"] == "order.paid"]
    assert len(bodies) == 2 and bodies[0][1] == bodies[1][1]  # the same event, retried
    assert bodies[0][0]["Tickets-Event-Id"] == bodies[1][0]["Tickets-Event-Id"]
    for headers, body in receiver.received:
        assert verify(headers, body, endpoint["secret"])
        assert not verify(headers, body + b"x", endpoint["secret"])
    event = json.loads(bodies[0][1])
    assert event["type"] == "order.paid" and event["data"]["order_id"] == order["id"] and event["gala_id"] == gala["id"]
    assert "buyer_email" not in json.dumps(event)

    # Replay: the same event id again.
    r = await c.post(f"/v1/webhook-deliveries/{paid['id']}/replay", headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "pending"
    await drain(db, settings, keys)
    assert receiver.received[-1][0]["Tickets-Event-Id"] == bodies[0][0]["Tickets-Event-Id"]

    # A refund is an event too; deleting the endpoint stops deliveries.
    tickets = (await c.get(f"/v1/orders/{order['id']}/tickets", headers=admin)).json()["data"]
    r = await c.post(f"/v1/orders/{order['id']}/refunds", json={"ticket_ids": [tickets[0]["id"]]}, headers=admin)
    assert r.status_code == 201, r.text
    await drain(db, settings, keys)
    assert receiver.received[-1][0]["Tickets-Event-Type"] == "order.refunded"
    assert (await c.delete(f"/v1/webhook-endpoints/{endpoint['id']}", headers=admin)).status_code == 204
    assert (await c.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=admin)).status_code == 404


async def test_expired_orders_are_announced(
    private_ok: tuple[httpx.AsyncClient, Settings, Any],
    admin: dict[str, str],
    receiver: Receiver,
    db: Database,
    settings: Settings,
    client: httpx.AsyncClient,
) -> None:
    c, hook_settings, app = private_ok
    assert settings.payments_enabled  # the session app takes card orders; the hook app only delivers
    gala = await create_gala(client, admin)
    floor = await add_general(client, admin, gala["id"], 10)
    tier = await add_ticket_type(client, admin, gala["id"], [floor["id"]], price_amount=900)
    await publish(client, admin, gala["id"])
    r = await c.post(
        "/v1/webhook-endpoints",
        json={"url": receiver.url, "events": ["order.expired"], "gala_id": gala["id"]},
        headers=admin,
    )
    assert r.status_code == 201
    pending = (
        await client.post("/v1/orders", json=order_body(gala["id"], [{"ticket_type_id": tier["id"], "quantity": 1}]))
    ).json()
    assert pending["status"] == "pending"
    await orders_service.expire_due_orders(db, now=utc_now() + timedelta(hours=1))
    await drain(db, hook_settings, app.state.keys)
    types = [(h["Tickets-Event-Type"], json.loads(b)["data"]["order_id"]) for h, b in receiver.received]
    assert ("order.expired", pending["id"]) in types


async def test_two_workers_never_send_one_attempt_twice(
    private_ok: tuple[httpx.AsyncClient, Settings, Any], admin: dict[str, str], receiver: Receiver, db: Database
) -> None:
    c, settings, app = private_ok
    gala = await create_gala(c, admin)
    floor = await add_general(c, admin, gala["id"], 20)
    tier = await add_ticket_type(c, admin, gala["id"], [floor["id"]], price_amount=0)
    await publish(c, admin, gala["id"])
    await c.post(
        "/v1/webhook-endpoints",
        json={"url": receiver.url, "events": ["order.paid"], "gala_id": gala["id"]},
        headers=admin,
    )
    for _ in range(5):
        await c.post("/v1/orders", json=order_body(gala["id"], [{"ticket_type_id": tier["id"], "quantity": 1}]))
    await asyncio.gather(*(drain(db, settings, app.state.keys) for _ in range(4)))
    ids = [h["Tickets-Event-Id"] for h, _ in receiver.received]
    assert len(ids) == 5 and len(set(ids)) == 5

"""Check-in at the door, through the API: every verdict, repeated scans, undo, stats, the offline bundle,
offline uploads where the earliest admission stands, and the scan rate limit."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlmodel import col

from tests.conftest import make_settings, new_api_key
from tests.factories import add_general, add_reserved, add_ticket_type, create_gala, order_body, publish, seat_ids
from tests.support import (
    app_client,
    asgi_client,
    psycopg_url,
    running_app,
    scratch_database,
    start_of_a_rate_window,
)
from tickets.auth.models import Role
from tickets.checkin import service as checkin_service
from tickets.checkin.models import Scan
from tickets.clock import utc_now
from tickets.config import Settings
from tickets.db import Database
from tickets.keys import KeyRing
from tickets.migrate import upgrade_to_head
from tickets.tickets import codes
from tickets.webhooks.models import OutboxEvent


async def door_gala(client: httpx.AsyncClient, admin: dict[str, str], **gala: Any) -> dict[str, Any]:
    """A published gala with free tickets: 6 reserved seats (type "VIP") and a general floor (type "Floor")."""
    made = await create_gala(client, admin, **gala)
    stalls = await add_reserved(
        client, admin, made["id"], [{"label": f"A{n}", "row": "A", "number": n} for n in range(1, 7)], name="Stalls"
    )
    floor = await add_general(client, admin, made["id"], 50, name="Floor")
    vip = await add_ticket_type(client, admin, made["id"], [stalls["id"]], name="VIP", price_amount=0)
    ga = await add_ticket_type(client, admin, made["id"], [floor["id"]], name="Floor", price_amount=0)
    await publish(client, admin, made["id"])
    return {"gala": made, "vip": vip, "ga": ga, "seats": await seat_ids(client, made["id"])}


async def buy(client: httpx.AsyncClient, gala: dict[str, Any], *labels: str, floor: int = 0) -> dict[str, Any]:
    """A free order (paid at once); returns the order with its tickets (each with its `code`)."""
    items: list[dict[str, Any]] = [
        {"ticket_type_id": gala["vip"]["id"], "seat_id": gala["seats"][label], "attendee_name": f"Guest {label}"}
        for label in labels
    ]
    items += [{"ticket_type_id": gala["ga"]["id"], "quantity": 1, "attendee_name": f"Floor {n}"} for n in range(floor)]
    r = await client.post("/v1/orders", json=order_body(gala["gala"]["id"], items))
    assert r.status_code == 201 and r.json()["status"] == "paid", r.text
    order = r.json()
    token = {"X-Order-Token": order["access_token"]}
    tickets = (await client.get(f"/v1/orders/{order['id']}/tickets", headers=token)).json()["data"]
    return {**order, "tickets": tickets, "token": token}


async def scan(
    client: httpx.AsyncClient, headers: dict[str, str], gala_id: str, code: str, **extra: Any
) -> httpx.Response:
    return await client.post("/v1/scans", json={"code": code, "gala_id": gala_id, **extra}, headers=headers)


async def scan_ok(
    client: httpx.AsyncClient, headers: dict[str, str], gala_id: str, code: str, **extra: Any
) -> dict[str, Any]:
    r = await scan(client, headers, gala_id, code, **extra)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def logged(db: Database, gala_id: str) -> dict[str, Scan]:
    async with db.read_sessions() as s:
        return {r.scan_id: r for r in (await s.execute(select(Scan).where(col(Scan.gala_id) == gala_id))).scalars()}


async def checked_in_events(db: Database, gala_id: str) -> list[dict[str, Any]]:
    """The data of the gala's `ticket.checked_in` events in the outbox."""
    async with db.read_sessions() as s:
        events = await s.execute(
            select(OutboxEvent).where(col(OutboxEvent.gala_id) == gala_id, col(OutboxEvent.type) == "ticket.checked_in")
        )
        return [e.data for e in events.scalars()]


async def limited_door_key(client: httpx.AsyncClient, admin: dict[str, str], gala_id: str) -> dict[str, str]:
    r = await client.post(
        "/v1/api-keys", json={"name": "volunteer", "role": "door", "gala_ids": [gala_id]}, headers=admin
    )
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['key']}"}


async def test_first_scan_admits_and_later_ones_say_when_and_where(
    client: httpx.AsyncClient, admin: dict[str, str], door: dict[str, str], db: Database
) -> None:
    g = await door_gala(client, admin)
    gala_id = g["gala"]["id"]
    order = await buy(client, g, "A1", floor=1)
    seated, standing = sorted(order["tickets"], key=lambda t: t["seat_label"] is None)
    first = await scan_ok(client, door, gala_id, seated["code"], gate="North", device_id="phone-1")
    assert first["result"] == "admitted" and first["reason"] is None
    assert first["scan_id"].startswith("scn_")  # made by the server
    assert first["ticket"] == {
        "id": seated["id"],
        "attendee_name": "Guest A1",
        "ticket_type_id": g["vip"]["id"],
        "ticket_type_name": "VIP",
        "section_id": seated["section_id"],
        "section_name": "Stalls",
        "seat_label": "A1",
        "table": None,
        "status": "valid",
        "version": 1,
    }
    assert first["first_gate"] == "North" and first["first_checked_in_at"]
    assert "Guest A1" in first["message"] and "seat A1" in first["message"]

    again = await scan_ok(client, door, gala_id, seated["code"] + "\n", gate="South", device_id="phone-2")
    assert again["result"] == "already_checked_in"
    assert (again["first_checked_in_at"], again["first_gate"]) == (first["first_checked_in_at"], "North")
    assert "Already checked in" in again["message"] and "gate North" in again["message"]
    assert again["ticket"]["id"] == seated["id"]

    floor = await scan_ok(client, door, gala_id, standing["code"], gate="South")
    assert floor["result"] == "admitted" and floor["ticket"]["seat_label"] is None
    assert "Floor" in floor["message"]

    r = await client.get(f"/v1/tickets/{seated['id']}", headers=order["token"])
    assert r.json()["checked_in_at"] == first["first_checked_in_at"]

    log = await logged(db, gala_id)
    assert {(s.result, s.gate, s.device_id, s.counted) for s in log.values()} == {
        ("admitted", "North", "phone-1", True),
        ("already_checked_in", "South", "phone-2", False),
        ("admitted", "South", None, True),
    }
    assert all(s.key_id.startswith("key_") and s.received_at and s.source == "online" for s in log.values())
    by_ticket = {data["ticket_id"]: data for data in await checked_in_events(db, gala_id)}
    assert set(by_ticket) == {seated["id"], standing["id"]}
    assert by_ticket[seated["id"]]["gate"] == "North" and by_ticket[seated["id"]]["scan_id"] == first["scan_id"]


async def test_malformed_forged_and_unknown_codes_are_invalid(
    client: httpx.AsyncClient, admin: dict[str, str], door: dict[str, str], db: Database, settings: Settings
) -> None:
    g = await door_gala(client, admin)
    gala_id = g["gala"]["id"]
    code = (await buy(client, g, "A1"))["tickets"][0]["code"]
    payload, _, _ = codes.parse(code)
    forged = codes.encode(KeyRing(b"not the server's secret key at all"), payload)  # a well-formed code, wrong key
    tampered = code[:100] + ("A" if code[100] != "A" else "B") + code[101:]  # one character of the signature
    unknown = codes.encode(
        KeyRing(settings.resolved_secret_key()),
        codes.CodePayload(ticket_id="tkt_" + "Z" * 20, gala_id=gala_id, version=1),
    )
    cases = {
        "hello": "malformed",
        "": "malformed",
        code.lower(): "malformed",  # decodes, but is not the canonical text
        code + "=" * 4: "malformed",
        forged: "forged",
        tampered: "forged",
        unknown: "unknown_ticket",
    }
    for text, reason in cases.items():
        body = await scan_ok(client, door, gala_id, text, gate="West")
        assert (body["result"], body["reason"], body["ticket"]) == ("invalid", reason, None), text
        assert "Do not admit" in body["message"]
    # None of these touched the real ticket: its code still admits.
    assert (await scan_ok(client, door, gala_id, code))["result"] == "admitted"
    results = sorted(s.result for s in (await logged(db, gala_id)).values())
    assert results == ["admitted"] + ["invalid"] * len(cases)


async def test_a_ticket_of_another_gala_is_wrong_gala(
    client: httpx.AsyncClient, admin: dict[str, str], door: dict[str, str]
) -> None:
    here = await door_gala(client, admin, title="Youth Night")
    there = await door_gala(client, admin, title="Heritage Gala")
    code = (await buy(client, there, "A2"))["tickets"][0]["code"]
    body = await scan_ok(client, door, here["gala"]["id"], code, gate="North")
    assert (body["result"], body["reason"], body["ticket"]) == ("wrong_gala", "other_gala", None)
    assert "Heritage Gala" in body["message"]
    # The ticket is untouched at its own gala.
    assert (await scan_ok(client, door, there["gala"]["id"], code))["result"] == "admitted"


async def test_refunded_and_transferred_tickets_are_void(
    client: httpx.AsyncClient, admin: dict[str, str], door: dict[str, str]
) -> None:
    g = await door_gala(client, admin)
    gala_id = g["gala"]["id"]
    lost = await buy(client, g, "A1")
    refunded = lost["tickets"][0]
    order = await buy(client, g, "A2")
    transferred = order["tickets"][0]
    r = await client.post(
        f"/v1/orders/{lost['id']}/refunds", json={"ticket_ids": [refunded["id"]], "reason": "ill"}, headers=admin
    )
    assert r.status_code in (200, 201), r.text
    body = await scan_ok(client, door, gala_id, refunded["code"])
    assert (body["result"], body["reason"]) == ("void", "void")
    assert body["ticket"]["status"] == "void" and "Guest A1" in body["message"]

    r = await client.post(
        f"/v1/tickets/{transferred['id']}/transfer",
        json={"attendee_name": "Nigar H", "attendee_email": "nigar@example.org"},
        headers=order["token"],
    )
    assert r.status_code == 200, r.text
    new_code = r.json()["code"]
    assert r.json()["version"] == 2 and new_code != transferred["code"]
    old = await scan_ok(client, door, gala_id, transferred["code"])
    assert (old["result"], old["reason"]) == ("void", "superseded")
    assert old["ticket"]["version"] == 2 and "transferred" in old["message"]
    new = await scan_ok(client, door, gala_id, new_code)
    assert new["result"] == "admitted" and new["ticket"]["attendee_name"] == "Nigar H"


async def test_a_repeated_scan_id_returns_the_first_answer(
    client: httpx.AsyncClient, admin: dict[str, str], door: dict[str, str], db: Database
) -> None:
    g = await door_gala(client, admin)
    gala_id = g["gala"]["id"]
    a1, a2 = (await buy(client, g, "A1", "A2"))["tickets"]
    scan_id = str(uuid.uuid4())
    first = await scan_ok(client, door, gala_id, a1["code"], scan_id=scan_id, gate="North")
    assert first["result"] == "admitted" and first["scan_id"] == scan_id
    # A retry (the answer was lost on the way) gets the same answer, not "already checked in": the same bytes.
    first_bytes = (await scan(client, door, gala_id, a1["code"], scan_id=scan_id, gate="North")).content
    assert json.loads(first_bytes) == first
    assert (await scan(client, door, gala_id, a1["code"], scan_id=scan_id)).content == first_bytes
    # Whatever comes with it.
    assert await scan_ok(client, door, gala_id, a2["code"], scan_id=scan_id, gate="South") == first
    assert (await scan_ok(client, door, gala_id, a2["code"]))["result"] == "admitted"  # a2 was not scanned
    # Even after an undo, replaying the scan id does not admit the ticket again.
    r = await client.post(f"/v1/scans/{scan_id}/undo", json={"reason": "wrong guest"}, headers=door)
    assert r.status_code == 200, r.text
    assert await scan_ok(client, door, gala_id, a1["code"], scan_id=scan_id) == first
    r = await client.get(f"/v1/galas/{gala_id}/scan-sync", headers=door)
    assert {t["id"]: t["checked_in_at"] for t in r.json()["tickets"]}[a1["id"]] is None
    # The same client scan id at another gala is another scan.
    other = await door_gala(client, admin)
    code = (await buy(client, other, "A1"))["tickets"][0]["code"]
    assert (await scan_ok(client, door, other["gala"]["id"], code, scan_id=scan_id))["result"] == "admitted"
    assert len(await logged(db, gala_id)) == 2


async def test_malformed_requests_and_refusals(
    client: httpx.AsyncClient, admin: dict[str, str], door: dict[str, str]
) -> None:
    g = await door_gala(client, admin)
    gala_id = g["gala"]["id"]
    r = await client.post("/v1/scans", json={"gala_id": gala_id}, headers=door)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "validation_error" and r.json()["errors"][0]["loc"] == ["body", "code"]
    r = await scan(client, door, gala_id, "x", scan_id="s" * 65)
    assert r.status_code == 422
    r = await client.post("/v1/scans", json={"code": "x"}, headers=door)
    assert r.status_code == 422
    r = await scan(client, door, "gal_" + "N" * 20, "x")
    assert r.status_code == 404 and r.json()["code"] == "gala_not_found"
    r = await scan(client, {}, gala_id, "x")
    assert r.status_code == 401

    other = await door_gala(client, admin)
    volunteer = await limited_door_key(client, admin, other["gala"]["id"])
    code = (await buy(client, g, "A1"))["tickets"][0]["code"]
    r = await scan(client, volunteer, gala_id, code)
    assert r.status_code == 403 and r.json()["code"] == "gala_not_allowed"
    for path in ("checkin-stats", "scan-sync"):
        r = await client.get(f"/v1/galas/{gala_id}/{path}", headers=volunteer)
        assert r.status_code == 403, path
    r = await client.post(
        "/v1/scans/batch",
        json={
            "gala_id": gala_id,
            "device_id": "p",
            "scans": [{"scan_id": "b1", "code": code, "scanned_at": utc_now().isoformat()}],
        },
        headers=volunteer,
    )
    assert r.status_code == 403
    admitted = await scan_ok(client, door, gala_id, code)
    r = await client.post(f"/v1/scans/{admitted['scan_id']}/undo", json={"gala_id": gala_id}, headers=volunteer)
    assert r.status_code == 403
    # Without gala_id, the limited key does not see the other gala's scan at all.
    r = await client.post(f"/v1/scans/{admitted['scan_id']}/undo", headers=volunteer)
    assert r.status_code == 404 and r.json()["code"] == "scan_not_found"
    # The volunteer's own gala works.
    own = (await buy(client, other, "A3"))["tickets"][0]["code"]
    assert (await scan_ok(client, volunteer, other["gala"]["id"], own))["result"] == "admitted"


async def test_undo_reverses_an_admission_and_is_logged(
    client: httpx.AsyncClient, admin: dict[str, str], door: dict[str, str], db: Database
) -> None:
    g = await door_gala(client, admin)
    gala_id = g["gala"]["id"]
    ticket = (await buy(client, g, "A4"))["tickets"][0]
    first = await scan_ok(client, door, gala_id, ticket["code"], gate="North")
    r = await client.post(
        f"/v1/scans/{first['scan_id']}/undo", json={"reason": "scanned the wrong guest"}, headers=door
    )
    assert r.status_code == 200, r.text
    undone = r.json()
    assert (undone["scan_id"], undone["gala_id"], undone["ticket_id"]) == (first["scan_id"], gala_id, ticket["id"])
    assert undone["reason"] == "scanned the wrong guest" and undone["undone_by_key_id"].startswith("key_")
    assert undone["ticket"]["id"] == ticket["id"]
    stats = (await client.get(f"/v1/galas/{gala_id}/checkin-stats", headers=door)).json()
    assert stats["admitted"] == 0

    r = await client.post(f"/v1/scans/{first['scan_id']}/undo", headers=door)
    assert r.status_code == 409 and r.json()["code"] == "scan_already_undone"
    again = await scan_ok(client, door, gala_id, ticket["code"], gate="South")
    assert again["result"] == "admitted" and again["first_gate"] == "South"
    repeat = await scan_ok(client, door, gala_id, ticket["code"])
    r = await client.post(f"/v1/scans/{repeat['scan_id']}/undo", json={"gala_id": gala_id}, headers=door)
    assert r.status_code == 409 and r.json()["code"] == "scan_not_admission"
    bad = await scan_ok(client, door, gala_id, "garbage")
    r = await client.post(f"/v1/scans/{bad['scan_id']}/undo", headers=door)
    assert r.status_code == 409 and r.json()["code"] == "scan_not_admission"
    r = await client.post("/v1/scans/nope-never-scanned/undo", json={}, headers=door)
    assert r.status_code == 404 and r.json()["code"] == "scan_not_found"

    log = await logged(db, gala_id)
    row = log[first["scan_id"]]
    assert (row.counted, row.undo_reason, row.undone_by_key_id) == (
        False,
        "scanned the wrong guest",
        undone["undone_by_key_id"],
    )
    assert row.undone_at is not None and row.result == "admitted"  # the verdict as given stays in the log
    assert log[again["scan_id"]].counted

    # A client scan id used at two galas: name the gala.
    other = await door_gala(client, admin)
    code = (await buy(client, other, "A1"))["tickets"][0]["code"]
    second = (await buy(client, g, "A5"))["tickets"][0]["code"]
    assert (await scan_ok(client, door, gala_id, second, scan_id="door-7"))["result"] == "admitted"
    assert (await scan_ok(client, door, other["gala"]["id"], code, scan_id="door-7"))["result"] == "admitted"
    r = await client.post("/v1/scans/door-7/undo", headers=door)
    assert r.status_code == 409 and r.json()["code"] == "scan_id_ambiguous"
    assert sorted(r.json()["gala_ids"]) == sorted([gala_id, other["gala"]["id"]])
    r = await client.post("/v1/scans/door-7/undo", json={"gala_id": other["gala"]["id"]}, headers=door)
    assert r.status_code == 200 and r.json()["gala_id"] == other["gala"]["id"]


async def test_checkin_stats(client: httpx.AsyncClient, admin: dict[str, str], door: dict[str, str]) -> None:
    g = await door_gala(client, admin)
    gala_id = g["gala"]["id"]
    empty = (await client.get(f"/v1/galas/{gala_id}/checkin-stats", headers=door)).json()
    assert (empty["admitted"], empty["expected"], empty["by_gate"], empty["arrivals"]) == (0, 0, [], [])
    assert {t["name"]: (t["admitted"], t["expected"]) for t in empty["by_ticket_type"]} == {
        "VIP": (0, 0),
        "Floor": (0, 0),
    }

    order = await buy(client, g, "A1", "A2", "A3", floor=2)
    tickets = sorted(order["tickets"], key=lambda t: t["seat_label"] or "Z")
    refunded = await buy(client, g, floor=1)
    for ticket, gate in zip(tickets[:4], ["North", "North", "South", "North"], strict=True):
        assert (await scan_ok(client, door, gala_id, ticket["code"], gate=gate))["result"] == "admitted"
    await scan_ok(client, door, gala_id, tickets[0]["code"], gate="South")  # already in
    await scan_ok(client, door, gala_id, "not a code", gate="South")
    r = await client.post(
        f"/v1/orders/{refunded['id']}/refunds", json={"ticket_ids": [refunded["tickets"][0]["id"]]}, headers=admin
    )
    assert r.status_code in (200, 201), r.text

    r = await client.get(f"/v1/galas/{gala_id}/checkin-stats", params={"bucket_minutes": 1}, headers=door)
    assert r.status_code == 200, r.text
    stats = r.json()
    assert (stats["admitted"], stats["expected"]) == (4, 5)  # the refunded ticket is not expected
    assert {t["name"]: (t["admitted"], t["expected"]) for t in stats["by_ticket_type"]} == {
        "VIP": (3, 3),
        "Floor": (1, 2),
    }
    assert stats["by_gate"] == [{"gate": "North", "admitted": 3}, {"gate": "South", "admitted": 1}]
    assert stats["bucket_minutes"] == 1 and sum(b["count"] for b in stats["arrivals"]) == 4
    starts = [datetime.fromisoformat(b["start"]) for b in stats["arrivals"]]
    assert all(s.second == 0 and s.microsecond == 0 for s in starts) and starts == sorted(starts)
    assert {s["result"]: s["count"] for s in stats["scans"]} == {"admitted": 4, "already_checked_in": 1, "invalid": 1}
    r = await client.get(f"/v1/galas/{gala_id}/checkin-stats", params={"bucket_minutes": 0}, headers=door)
    assert r.status_code == 422
    r = await client.get(f"/v1/galas/gal_{'Q' * 20}/checkin-stats", headers=door)
    assert r.status_code == 404


async def test_scan_sync_bundle_and_deltas(
    client: httpx.AsyncClient, admin: dict[str, str], door: dict[str, str]
) -> None:
    g = await door_gala(client, admin)
    gala_id = g["gala"]["id"]
    lost = await buy(client, g, "A1")
    a1 = lost["tickets"][0]
    order = await buy(client, g, "A2", "A3")
    a2, a3 = sorted(order["tickets"], key=lambda t: t["seat_label"])
    r = await client.get(f"/v1/galas/{gala_id}/scan-sync", headers=door)
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert {t["id"] for t in bundle["tickets"]} == {a1["id"], a2["id"], a3["id"]}
    assert bundle["revoked"] == [] and bundle["has_more"] is False
    assert {t["name"] for t in bundle["ticket_types"]} == {"VIP", "Floor"}
    assert {s["name"] for s in bundle["sections"]} == {"Stalls", "Floor"}
    row = next(t for t in bundle["tickets"] if t["id"] == a1["id"])
    assert row == {
        "id": a1["id"],
        "version": 1,
        "status": "valid",
        "attendee_name": "Guest A1",
        "seat_label": "A1",
        "table": None,
        "ticket_type_id": g["vip"]["id"],
        "section_id": a1["section_id"],
        "checked_in_at": None,
        "checked_in_gate": None,
    }
    # The public key verifies a code offline, and refuses a forged one.
    public = base64.b64decode(bundle["public_key"])
    _, body, signature = codes.parse(a1["code"])
    assert codes.verify(public, body, signature)
    Ed25519PublicKey.from_public_bytes(public).verify(signature, body)  # and by OpenSSL, as a scanner might
    assert not codes.verify(public, body, bytes(64))

    # Changes after the bundle: a refund, a transfer, a check-in. The next delta carries each of them.
    since = bundle["next_since"]
    r = await client.post(f"/v1/orders/{lost['id']}/refunds", json={"ticket_ids": [a1["id"]]}, headers=admin)
    assert r.status_code in (200, 201), r.text
    r = await client.post(
        f"/v1/tickets/{a2['id']}/transfer",
        json={"attendee_name": "Rauf B", "attendee_email": "rauf@example.org"},
        headers=order["token"],
    )
    assert r.status_code == 200, r.text
    await scan_ok(client, door, gala_id, a3["code"], gate="East")
    delta = (await client.get(f"/v1/galas/{gala_id}/scan-sync", params={"since": since}, headers=door)).json()
    changed = {t["id"]: t for t in delta["tickets"]}
    assert changed[a1["id"]]["status"] == "void" and delta["revoked"] == [a1["id"]]
    assert (changed[a2["id"]]["version"], changed[a2["id"]]["attendee_name"]) == (2, "Rauf B")
    assert changed[a3["id"]]["checked_in_gate"] == "East" and changed[a3["id"]]["checked_in_at"]

    # Paging: `limit` cuts the bundle; `has_more` says to call again at once.
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 1}
        if cursor:
            params["since"] = cursor
        page = (await client.get(f"/v1/galas/{gala_id}/scan-sync", params=params, headers=door)).json()
        seen += [t["id"] for t in page["tickets"]]
        cursor = page["next_since"]
        if not page["has_more"]:
            break
    assert sorted(set(seen)) == sorted([a1["id"], a2["id"], a3["id"]])
    r = await client.get(f"/v1/galas/{gala_id}/scan-sync", params={"since": "garbage!"}, headers=door)
    assert r.status_code == 400 and r.json()["code"] == "invalid_cursor"


async def test_sync_delta_holds_only_what_changed(
    client: httpx.AsyncClient, admin: dict[str, str], db: Database, app: Any
) -> None:
    """At the service, with the clock past the overlap window: a delta is exactly the changed tickets."""
    g = await door_gala(client, admin)
    gala_id = g["gala"]["id"]
    await buy(client, g, "A1", "A2")
    lost = await buy(client, g, "A3")
    cache = checkin_service.DoorCache(app.state.keys, db, app.state.scan_store)
    later = utc_now() + timedelta(hours=1)
    async with db.read_sessions() as s:
        full = await checkin_service.sync_bundle(s, cache, gala_id=gala_id, since=None, limit=100, now=later)
        quiet = await checkin_service.sync_bundle(
            s, cache, gala_id=gala_id, since=full.next_since, limit=100, now=later
        )
    assert len(full.tickets) == 3 and quiet.tickets == [] and quiet.next_since == full.next_since
    voided = lost["tickets"][0]["id"]
    r = await client.post(f"/v1/orders/{lost['id']}/refunds", json={"ticket_ids": [voided]}, headers=admin)
    assert r.status_code in (200, 201), r.text
    async with db.read_sessions() as s:
        delta = await checkin_service.sync_bundle(
            s, cache, gala_id=gala_id, since=full.next_since, limit=100, now=later
        )
    assert [t.id for t in delta.tickets] == [voided] and delta.revoked == [voided]


def batch_scan(scan_id: str, code: str, at: datetime, gate: str | None = "Side") -> dict[str, Any]:
    return {"scan_id": scan_id, "code": code, "gate": gate, "scanned_at": at.isoformat()}


async def test_offline_batch_earliest_admission_stands(
    client: httpx.AsyncClient, admin: dict[str, str], door: dict[str, str], db: Database
) -> None:
    g = await door_gala(client, admin)
    gala_id = g["gala"]["id"]
    order = await buy(client, g, "A1", "A2", "A3")
    a1, a2, a3 = sorted(order["tickets"], key=lambda t: t["seat_label"])
    now = utc_now()
    online = await scan_ok(client, door, gala_id, a1["code"], gate="North", scan_id="online-1")
    assert online["result"] == "admitted"

    body = {
        "gala_id": gala_id,
        "device_id": "phone-9",
        "scans": [
            batch_scan("off-1", a1["code"], now - timedelta(minutes=10), gate="Side"),  # earlier than online
            batch_scan("off-2", a2["code"], now - timedelta(minutes=8)),
            batch_scan("off-3", a2["code"], now - timedelta(minutes=9)),  # the earlier of the two
            batch_scan("off-4", "junk", now - timedelta(minutes=7)),
            batch_scan("off-5", a3["code"], now + timedelta(days=1)),  # a device clock in the future
        ],
    }
    r = await client.post("/v1/scans/batch", json=body, headers=door)
    assert r.status_code == 200, r.text
    results = {x["scan_id"]: (x["result"], x["counted"]) for x in r.json()["results"]}
    assert [x["scan_id"] for x in r.json()["results"]] == ["off-1", "off-2", "off-3", "off-4", "off-5"]
    assert results == {
        "off-1": ("admitted", True),
        "off-2": ("already_checked_in", False),
        "off-3": ("admitted", True),
        "off-4": ("invalid", False),
        "off-5": ("admitted", True),
    }
    sync = (await client.get(f"/v1/galas/{gala_id}/scan-sync", headers=door)).json()
    state = {t["id"]: t for t in sync["tickets"]}
    first = datetime.fromisoformat(state[a1["id"]]["checked_in_at"])
    assert abs(first - (now - timedelta(minutes=10))) < timedelta(seconds=1)
    assert state[a1["id"]]["checked_in_gate"] == "Side"
    assert datetime.fromisoformat(state[a3["id"]]["checked_in_at"]) <= utc_now()  # clamped to the upload time

    log = await logged(db, gala_id)
    assert not log["online-1"].counted and log["off-1"].counted and log["off-1"].source == "offline"
    assert log["off-1"].device_id == "phone-9"
    # The displaced online admission no longer counts: undo the one that does.
    r = await client.post("/v1/scans/online-1/undo", headers=door)
    assert r.status_code == 409 and r.json()["code"] == "admission_superseded"
    # A later offline admission from another device loses.
    later = {
        "gala_id": gala_id,
        "device_id": "phone-4",
        "scans": [batch_scan("other-1", a1["code"], now - timedelta(minutes=5), gate="Back")],
    }
    r = await client.post("/v1/scans/batch", json=later, headers=door)
    assert r.json()["results"] == [
        {"scan_id": "other-1", "result": "already_checked_in", "counted": False, "reason": "already_checked_in"}
    ]
    # Uploading again is harmless: the same answers, nothing counted twice.
    r = await client.post("/v1/scans/batch", json=body, headers=door)
    assert {x["scan_id"]: (x["result"], x["counted"]) for x in r.json()["results"]} == results
    stats = (await client.get(f"/v1/galas/{gala_id}/checkin-stats", headers=door)).json()
    assert stats["admitted"] == 3
    assert {x["gate"]: x["admitted"] for x in stats["by_gate"]} == {"Side": 3}
    # An online retry of the displaced scan still answers as it did.
    assert (await scan_ok(client, door, gala_id, a1["code"], scan_id="online-1")) == online
    announced = sorted(data["ticket_id"] for data in await checked_in_events(db, gala_id))
    assert announced == sorted([a1["id"], a2["id"], a3["id"]])  # one event per ticket, none for the move


async def test_batch_validation(client: httpx.AsyncClient, admin: dict[str, str], door: dict[str, str]) -> None:
    g = await door_gala(client, admin)
    gala_id = g["gala"]["id"]
    at = utc_now().replace(tzinfo=None).isoformat()  # no time zone
    r = await client.post(
        "/v1/scans/batch",
        json={"gala_id": gala_id, "device_id": "p", "scans": [{"scan_id": "x", "code": "y", "scanned_at": at}]},
        headers=door,
    )
    assert r.status_code == 422
    r = await client.post("/v1/scans/batch", json={"gala_id": gala_id, "device_id": "p", "scans": []}, headers=door)
    assert r.status_code == 422
    many = [batch_scan(f"s{n}", "y", datetime.now(UTC)) for n in range(501)]
    r = await client.post("/v1/scans/batch", json={"gala_id": gala_id, "device_id": "p", "scans": many}, headers=door)
    assert r.status_code == 422


async def test_scan_rate_limit_per_device_and_per_key(
    client: httpx.AsyncClient, admin: dict[str, str], door: dict[str, str], settings: Settings
) -> None:
    g = await door_gala(client, admin)
    gala_id = g["gala"]["id"]
    key = {
        "Authorization": f"Bearer {(await client.post('/v1/api-keys', json={'name': 'gate', 'role': 'door'}, headers=admin)).json()['key']}"
    }
    limited = make_settings(settings.database_url, settings.data_dir, rate_limit_scans="5/hour")
    await start_of_a_rate_window()
    async with app_client(limited, "http://limited") as c:
        statuses = [(await scan(c, key, gala_id, "probe", device_id="d1")).status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        r = await scan(c, key, gala_id, "probe", device_id="d1")
        assert r.status_code == 429 and r.json()["code"] == "rate_limited"
        assert 1 <= int(r.headers["Retry-After"]) <= 3600
        # Other devices of the key go on, up to four times the limit for the key as a whole.
        for device in ("d2", "d3", "d4"):
            for _ in range(5):
                assert (await scan(c, key, gala_id, "probe", device_id=device)).status_code == 200
        r = await scan(c, key, gala_id, "probe", device_id="d5")
        assert r.status_code == 429
        # Batches count too, once per upload.
        r = await c.post(
            "/v1/scans/batch",
            json={"gala_id": gala_id, "device_id": "d9", "scans": [batch_scan("rl-1", "probe", utc_now())]},
            headers=key,
        )
        assert r.status_code == 429
        # Another key is not affected.
        assert (await scan(c, door, gala_id, "probe", device_id="d1")).status_code == 200
    # A scanner that names no device is not one device: only its key's limit (4 × 5) applies.
    other = {
        "Authorization": f"Bearer {(await client.post('/v1/api-keys', json={'name': 'app', 'role': 'door'}, headers=admin)).json()['key']}"
    }
    async with app_client(limited, "http://limited") as c:
        statuses = [(await scan(c, other, gala_id, "probe")).status_code for _ in range(21)]
        assert statuses == [200] * 20 + [429]


@pytest.mark.parametrize("text", ["", "   ", "A" * 2000])
async def test_any_text_gets_a_verdict(
    client: httpx.AsyncClient, admin: dict[str, str], door: dict[str, str], text: str
) -> None:
    g = await door_gala(client, admin)
    body = await scan_ok(client, door, g["gala"]["id"], text)
    assert body["result"] == "invalid"


async def test_stale_ticket_hints_never_decide(
    client: httpx.AsyncClient, admin: dict[str, str], door: dict[str, str], db: Database, app: Any
) -> None:
    """Each process keeps a gala's tickets as a hint for one-round-trip admissions. Tickets changed after
    the hint was read (refunded, transferred, renamed, undone) are still decided from the database."""
    g = await door_gala(client, admin)
    gala_id = g["gala"]["id"]
    lost = await buy(client, g, "A2")
    a2 = lost["tickets"][0]
    order = await buy(client, g, "A1", "A3", "A4", "A5")
    a1, a3, a4, a5 = sorted(order["tickets"], key=lambda t: t["seat_label"])
    first = await scan_ok(client, door, gala_id, a1["code"], gate="North")
    assert first["result"] == "admitted"
    cache: checkin_service.DoorCache = app.state.door_cache
    for _ in range(100):  # the first scan of a gala starts reading its tickets in the background
        if cache.ticket_hint(gala_id, a2["id"]) is not None:
            break
        await asyncio.sleep(0.05)
    hint = cache.ticket_hint(gala_id, a4["id"])
    assert hint is not None and hint.attendee_name == "Guest A4" and hint.checked_in_at is None

    # Changes behind the hint's back.
    r = await client.post(f"/v1/orders/{lost['id']}/refunds", json={"ticket_ids": [a2["id"]]}, headers=admin)
    assert r.status_code in (200, 201), r.text
    r = await client.post(
        f"/v1/tickets/{a3['id']}/transfer",
        json={"attendee_name": "New Owner", "attendee_email": "owner@example.org"},
        headers=order["token"],
    )
    assert r.status_code == 200, r.text
    a3_new_code = r.json()["code"]
    r = await client.patch(f"/v1/tickets/{a4['id']}", json={"attendee_name": "Renamed Guest"}, headers=admin)
    assert r.status_code == 200, r.text
    r = await client.post(f"/v1/scans/{first['scan_id']}/undo", json={}, headers=door)
    assert r.status_code == 200, r.text

    void = await scan_ok(client, door, gala_id, a2["code"])
    assert (void["result"], void["reason"]) == ("void", "void")
    old = await scan_ok(client, door, gala_id, a3["code"])
    assert (old["result"], old["reason"]) == ("void", "superseded")
    new = await scan_ok(client, door, gala_id, a3_new_code)
    assert new["result"] == "admitted" and new["ticket"]["attendee_name"] == "New Owner"
    renamed = await scan_ok(client, door, gala_id, a4["code"])
    assert renamed["result"] == "admitted" and renamed["ticket"]["attendee_name"] == "Renamed Guest"
    assert "Renamed Guest" in renamed["message"]
    again = await scan_ok(client, door, gala_id, a1["code"], gate="South")
    assert again["result"] == "admitted" and again["first_gate"] == "South"
    fresh = await scan_ok(client, door, gala_id, a5["code"])
    assert fresh["result"] == "admitted"
    repeat = await scan_ok(client, door, gala_id, a5["code"])
    assert repeat["result"] == "already_checked_in" and repeat["first_checked_in_at"] == fresh["first_checked_in_at"]

    log = await logged(db, gala_id)
    counted = sorted(row.ticket_id or "" for row in log.values() if row.counted)
    assert counted == sorted([a1["id"], a3["id"], a4["id"], a5["id"]])
    names = sorted(data["attendee_name"] for data in await checked_in_events(db, gala_id))
    assert names == ["Guest A1", "Guest A1", "Guest A5", "New Owner", "Renamed Guest"]


async def test_a_scan_survives_a_dropped_database_connection(tmp_path: Any) -> None:
    """The scan runs its statement on a pooled asyncpg connection itself: a connection the server dropped
    (a restart, a proxy's idle timeout) is discarded and the scan goes through on a fresh one. (PostgreSQL
    in both runs of the suite: the path is PostgreSQL's own.)"""
    server = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    with scratch_database(server, tmp_path) as url:
        upgrade_to_head(url)
        async with running_app(make_settings(url, tmp_path, db_pool_size=2)) as app, asgi_client(app) as client:
            admin = {"Authorization": f"Bearer {await new_api_key(app.state.db, Role.admin)}"}
            g = await door_gala(client, admin)
            gala_id = g["gala"]["id"]
            a1, a2, a3 = sorted((await buy(client, g, "A1", "A2", "A3"))["tickets"], key=lambda t: t["seat_label"])
            assert (await scan_ok(client, admin, gala_id, a1["code"]))["result"] == "admitted"

            assert drop_connections(url) >= 1

            for ticket in (a2, a3):
                assert (await scan_ok(client, admin, gala_id, ticket["code"]))["result"] == "admitted"
            again = await scan_ok(client, admin, gala_id, a1["code"])
            assert again["result"] == "already_checked_in"
            async with app.state.db.read_sessions() as s:
                counted = (await s.execute(select(Scan).where(col(Scan.gala_id) == gala_id, col(Scan.counted)))).all()
            assert len(counted) == 3


def drop_connections(url: str) -> int:
    """Terminate every other backend of the scratch database, as a server restart would."""
    with psycopg.connect(psycopg_url(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row is not None else 0


async def test_staff_and_public_requests_survive_dropped_database_connections(tmp_path: Any) -> None:
    """After the database dropped every pooled connection, the next requests go through on fresh ones: a
    connection the driver already knows is closed is replaced at checkout, and the API key lookup (no key
    cache here, so every request reads it) goes past dead connections as every `Database.glance` does. A
    connection that dies unnoticed fails its
    request with a retryable 503 that wrote nothing, never a 500; the retry goes through.
    (PostgreSQL in both runs of the suite.)"""
    server = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    with scratch_database(server, tmp_path) as url:
        upgrade_to_head(url)
        settings = make_settings(url, tmp_path, db_pool_size=2, api_key_cache_seconds=0)
        async with running_app(settings) as app, asgi_client(app) as client:
            admin = {"Authorization": f"Bearer {await new_api_key(app.state.db, Role.admin)}"}
            g = await door_gala(client, admin)
            gala_id = g["gala"]["id"]

            assert drop_connections(url) >= 1
            r = await client.get(f"/v1/galas/{gala_id}", headers=admin)
            assert r.status_code == 200, r.text

            assert drop_connections(url) >= 1
            await asyncio.sleep(0.2)  # time for the event loop to hear the server close the sockets
            order = await buy(client, g, "A1")
            assert [t["seat_label"] for t in order["tickets"]] == ["A1"]

            # No pause: the pooled connection is dead but nobody has noticed yet.
            assert drop_connections(url) >= 1
            item = {"ticket_type_id": g["vip"]["id"], "seat_id": g["seats"]["A2"], "attendee_name": "Guest A2"}
            body, key = order_body(gala_id, [item]), {"Idempotency-Key": uuid.uuid4().hex}
            answers = [await client.post("/v1/orders", json=body, headers=key)]
            if answers[0].status_code == 503:
                assert answers[0].json()["code"] == "database_unavailable"
                assert answers[0].headers["Retry-After"] == "1"
                answers.append(await client.post("/v1/orders", json=body, headers=key))
            assert answers[-1].status_code == 201 and answers[-1].json()["status"] == "paid", answers[-1].text
            assert all(a.status_code != 500 for a in answers)
            stats = (await client.get(f"/v1/galas/{gala_id}/checkin-stats", headers=admin)).json()
            assert stats["expected"] == 2

"""Typed helpers that build catalogue data through the API, as an organizer would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx


def future(days: int = 30) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0).isoformat()


async def create_gala(client: httpx.AsyncClient, admin: dict[str, str], **overrides: Any) -> dict[str, Any]:
    body = {
        "title": "Heritage Gala",
        "venue_name": "Meridian Arts Centre",
        "starts_at": future(30),
        "ends_at": future(31),
        "timezone": "America/Toronto",
        **overrides,
    }
    r = await client.post("/v1/galas", json=body, headers=admin)
    assert r.status_code == 201, r.text
    return dict(r.json())


def theatre_seats(rows: str = "AB", per_row: int = 5) -> list[dict[str, Any]]:
    return [{"label": f"{r}{n}", "row": r, "number": n} for r in rows for n in range(1, per_row + 1)]


def banquet_seats(tables: int = 2, per_table: int = 8) -> list[dict[str, Any]]:
    return [
        {"label": f"T{t}-{s}", "table": f"T{t}", "number": s}
        for t in range(1, tables + 1)
        for s in range(1, per_table + 1)
    ]


async def add_reserved(
    client: httpx.AsyncClient, admin: dict[str, str], gala_id: str, seats: list[dict[str, Any]], name: str = "Orchestra"
) -> dict[str, Any]:
    r = await client.post(
        f"/v1/galas/{gala_id}/sections", json={"name": name, "kind": "reserved", "seats": seats}, headers=admin
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def add_general(
    client: httpx.AsyncClient, admin: dict[str, str], gala_id: str, capacity: int, name: str = "Floor"
) -> dict[str, Any]:
    r = await client.post(
        f"/v1/galas/{gala_id}/sections", json={"name": name, "kind": "general", "capacity": capacity}, headers=admin
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def add_ticket_type(
    client: httpx.AsyncClient, admin: dict[str, str], gala_id: str, section_ids: list[str], **overrides: Any
) -> dict[str, Any]:
    body = {"name": "Regular", "price_amount": 5000, "section_ids": section_ids, **overrides}
    r = await client.post(f"/v1/galas/{gala_id}/ticket-types", json=body, headers=admin)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def publish(client: httpx.AsyncClient, admin: dict[str, str], gala_id: str) -> None:
    r = await client.post(f"/v1/galas/{gala_id}/publish", headers=admin)
    assert r.status_code == 200, r.text


async def seat_ids(client: httpx.AsyncClient, gala_id: str) -> dict[str, str]:
    """{label: seat_id} for every reserved seat of a gala."""
    r = await client.get(f"/v1/galas/{gala_id}/seats")
    assert r.status_code == 200, r.text
    return {s["label"]: s["id"] for sec in r.json()["sections"] for s in sec["seats"]}


async def on_sale_theatre(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    *,
    price: int = 5000,
    rows: str = "AB",
    per_row: int = 5,
    **tt: Any,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """A published gala with one reserved section and one tier; returns (gala, ticket type, seats by label)."""
    gala = await create_gala(client, admin)
    section = await add_reserved(client, admin, gala["id"], theatre_seats(rows, per_row))
    tier = await add_ticket_type(client, admin, gala["id"], [section["id"]], price_amount=price, **tt)
    await publish(client, admin, gala["id"])
    return gala, tier, await seat_ids(client, gala["id"])


def order_body(gala_id: str, items: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"gala_id": gala_id, "buyer_email": "leyla@example.org", "buyer_name": "Leyla M", "items": items, **extra}

from __future__ import annotations

import httpx

from tests.factories import (
    add_general,
    add_reserved,
    add_ticket_type,
    banquet_seats,
    create_gala,
    on_sale_theatre,
    order_body,
    publish,
    seat_ids,
    theatre_seats,
)
from tickets.seating.schemas import SeatMap


async def test_seat_map_has_rows_tables_and_general_areas(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    gala = await create_gala(client, admin)
    theatre = await add_reserved(client, admin, gala["id"], theatre_seats("AB", 3), name="Orchestra")
    banquet = await add_reserved(client, admin, gala["id"], banquet_seats(2, 8), name="Banquet")
    floor = await add_general(client, admin, gala["id"], 40, name="Standing")
    assert (theatre["capacity"], banquet["capacity"], floor["capacity"]) == (6, 16, 40)
    await add_ticket_type(client, admin, gala["id"], [theatre["id"]])
    await publish(client, admin, gala["id"])

    r = await client.get(f"/v1/galas/{gala['id']}/seats")
    assert r.status_code == 200
    doc = r.json()
    assert doc["gala_id"] == gala["id"]
    sections = {s["name"]: s for s in doc["sections"]}
    assert [s["label"] for s in sections["Orchestra"]["seats"]] == ["A1", "A2", "A3", "B1", "B2", "B3"]
    assert sections["Orchestra"]["seats"][0]["row"] == "A" and sections["Orchestra"]["seats"][0]["number"] == 1
    assert {s["table"] for s in sections["Banquet"]["seats"]} == {"T1", "T2"}
    assert all(s["status"] == "available" for s in sections["Banquet"]["seats"])
    assert sections["Standing"]["kind"] == "general"
    assert (sections["Standing"]["capacity"], sections["Standing"]["available"]) == (40, 40)
    assert sections["Standing"]["seats"] == []
    # The document is built as plain data for speed: it is exactly what the documented model gives.
    assert SeatMap.model_validate_json(r.content).model_dump(mode="json") == doc


async def test_labels_unique_within_gala(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    gala = await create_gala(client, admin)
    await add_reserved(client, admin, gala["id"], theatre_seats("A", 2), name="One")
    r = await client.post(
        f"/v1/galas/{gala['id']}/sections",
        json={"name": "Two", "kind": "reserved", "seats": [{"label": "A1"}]},
        headers=admin,
    )
    assert r.status_code == 409 and r.json()["code"] == "duplicate_label"
    r = await client.post(
        f"/v1/galas/{gala['id']}/sections",
        json={"name": "Three", "kind": "reserved", "seats": [{"label": "Z1"}, {"label": "Z1"}]},
        headers=admin,
    )
    assert r.status_code == 422
    await add_reserved(client, admin, gala["id"], banquet_seats(1, 2), name="Banquet")
    r = await client.post(
        f"/v1/galas/{gala['id']}/sections",
        json={"name": "Annex", "kind": "reserved", "seats": [{"label": "X-1", "table": "T1"}]},
        headers=admin,
    )
    assert r.status_code == 409 and r.json()["code"] == "duplicate_label"
    # Another gala may reuse the labels.
    other = await create_gala(client, admin)
    await add_reserved(client, admin, other["id"], theatre_seats("A", 2), name="One")


async def test_block_and_unblock(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    gala, tier, seats = await on_sale_theatre(client, admin, price=0)
    r = await client.post(f"/v1/galas/{gala['id']}/seats/block", json={"seat_ids": [seats["A1"]]}, headers=admin)
    assert r.status_code == 200 and r.json()["seats"][0]["status"] == "blocked"
    seat_map = (await client.get(f"/v1/galas/{gala['id']}/seats")).json()
    status = {s["label"]: s["status"] for s in seat_map["sections"][0]["seats"]}
    assert status["A1"] == "blocked" and status["A2"] == "available"

    # The public cannot buy a blocked seat.
    r = await client.post(
        "/v1/orders", json=order_body(gala["id"], [{"ticket_type_id": tier["id"], "seat_id": seats["A1"]}])
    )
    assert r.status_code == 409 and r.json()["code"] == "seat_unavailable"

    r = await client.post(f"/v1/galas/{gala['id']}/seats/unblock", json={"seat_ids": [seats["A1"]]}, headers=admin)
    assert r.status_code == 200 and r.json()["seats"][0]["status"] == "available"
    r = await client.post(
        f"/v1/galas/{gala['id']}/seats/block", json={"seat_ids": ["seat_unknown00000000000"]}, headers=admin
    )
    assert r.status_code == 404 and r.json()["code"] == "seat_not_found"


async def test_sold_inventory_cannot_be_removed(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    gala, tier, seats = await on_sale_theatre(client, admin, price=0)
    r = await client.post(
        "/v1/orders", json=order_body(gala["id"], [{"ticket_type_id": tier["id"], "seat_id": seats["A1"]}])
    )
    assert r.status_code == 201 and r.json()["status"] == "paid"

    r = await client.delete(f"/v1/galas/{gala['id']}/seats/{seats['A1']}", headers=admin)
    assert r.status_code == 409 and r.json()["code"] == "inventory_in_use"
    section_id = r.json() and (await client.get(f"/v1/galas/{gala['id']}/sections")).json()[0]["id"]
    r = await client.delete(f"/v1/galas/{gala['id']}/sections/{section_id}", headers=admin)
    assert r.status_code == 409

    # An unsold seat can go, and the capacity follows.
    r = await client.delete(f"/v1/galas/{gala['id']}/seats/{seats['B5']}", headers=admin)
    assert r.status_code == 204
    assert "B5" not in await seat_ids(client, gala["id"])
    sections = (await client.get(f"/v1/galas/{gala['id']}/sections")).json()
    assert sections[0]["capacity"] == 9 and sections[0]["available"] == 8


async def test_general_capacity_cannot_drop_below_sold(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    gala = await create_gala(client, admin)
    floor = await add_general(client, admin, gala["id"], 5)
    tier = await add_ticket_type(client, admin, gala["id"], [floor["id"]], price_amount=0)
    await publish(client, admin, gala["id"])
    r = await client.post("/v1/orders", json=order_body(gala["id"], [{"ticket_type_id": tier["id"], "quantity": 3}]))
    assert r.status_code == 201, r.text

    r = await client.patch(f"/v1/galas/{gala['id']}/sections/{floor['id']}", json={"capacity": 2}, headers=admin)
    assert r.status_code == 409 and r.json()["code"] == "inventory_in_use"
    r = await client.patch(f"/v1/galas/{gala['id']}/sections/{floor['id']}", json={"capacity": 3}, headers=admin)
    assert r.status_code == 200 and (r.json()["capacity"], r.json()["available"]) == (3, 0)
    r = await client.patch(f"/v1/galas/{gala['id']}/sections/{floor['id']}", json={"capacity": 10}, headers=admin)
    assert r.status_code == 200 and (r.json()["capacity"], r.json()["available"]) == (10, 7)


async def test_add_seats_to_reserved_section(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    gala = await create_gala(client, admin)
    section = await add_reserved(client, admin, gala["id"], theatre_seats("A", 2))
    r = await client.post(
        f"/v1/galas/{gala['id']}/sections/{section['id']}/seats", json={"seats": [{"label": "A3"}]}, headers=admin
    )
    assert r.status_code == 201 and r.json()["capacity"] == 3
    r = await client.post(
        f"/v1/galas/{gala['id']}/sections/{section['id']}/seats", json={"seats": [{"label": "A3"}]}, headers=admin
    )
    assert r.status_code == 409

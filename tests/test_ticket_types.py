from __future__ import annotations

import httpx

from tests.factories import add_general, add_reserved, add_ticket_type, create_gala, future, publish, theatre_seats


async def test_ticket_types_with_availability(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    gala = await create_gala(client, admin)
    stalls = await add_reserved(client, admin, gala["id"], theatre_seats("AB", 5))
    balcony = await add_general(client, admin, gala["id"], 300, name="Balcony")
    vip = await add_ticket_type(client, admin, gala["id"], [stalls["id"]], name="VIP", price_amount=25000)
    youth = await add_ticket_type(
        client, admin, gala["id"], [balcony["id"]], name="Youth", price_amount=4000, quota=100
    )
    assert vip["available"] == 10 and youth["available"] == 100
    assert vip["currency"] == "CAD"
    await publish(client, admin, gala["id"])
    listed = (await client.get(f"/v1/galas/{gala['id']}/ticket-types")).json()
    assert [t["name"] for t in listed] == ["VIP", "Youth"]


async def test_ticket_type_validation(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    gala = await create_gala(client, admin)
    stalls = await add_reserved(client, admin, gala["id"], theatre_seats("A", 2))
    floor = await add_general(client, admin, gala["id"], 10)
    url = f"/v1/galas/{gala['id']}/ticket-types"
    bad = [
        {"name": "X", "price_amount": -1, "section_ids": [stalls["id"]]},
        {"name": "X", "price_amount": 1, "section_ids": []},
        {"name": "X", "price_amount": 1, "section_ids": [stalls["id"]], "min_per_order": 3, "max_per_order": 2},
        {
            "name": "X",
            "price_amount": 1,
            "section_ids": [stalls["id"]],
            "sales_start": future(5),
            "sales_end": future(2),
        },
        {"name": "X", "price_amount": 1, "section_ids": [stalls["id"], floor["id"]]},
    ]
    for body in bad:
        r = await client.post(url, json=body, headers=admin)
        assert r.status_code == 422, (body, r.text)
    r = await client.post(
        url, json={"name": "X", "price_amount": 1, "section_ids": ["sec_nope0000000000000000"]}, headers=admin
    )
    assert r.status_code == 404 and r.json()["code"] == "section_not_found"


async def test_quota_cannot_drop_below_sold(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    gala = await create_gala(client, admin)
    floor = await add_general(client, admin, gala["id"], 10)
    tier = await add_ticket_type(client, admin, gala["id"], [floor["id"]], price_amount=0, quota=5)
    await publish(client, admin, gala["id"])
    body = {
        "gala_id": gala["id"],
        "buyer_email": "a@example.org",
        "buyer_name": "A",
        "items": [{"ticket_type_id": tier["id"], "quantity": 4}],
    }
    assert (await client.post("/v1/orders", json=body)).status_code == 201
    url = f"/v1/galas/{gala['id']}/ticket-types/{tier['id']}"
    r = await client.patch(url, json={"quota": 3}, headers=admin)
    assert r.status_code == 409 and r.json()["code"] == "quota_below_sold"
    r = await client.patch(url, json={"quota": 6, "price_amount": 100}, headers=admin)
    assert r.status_code == 200 and r.json()["available"] == 2
    r = await client.delete(url, headers=admin)
    assert r.status_code == 409 and r.json()["code"] == "ticket_type_in_use"

from __future__ import annotations

import csv
import io

import httpx
import pytest

from tests.factories import (
    add_general,
    add_reserved,
    add_ticket_type,
    create_gala,
    order_body,
    publish,
    seat_ids,
    theatre_seats,
)


@pytest.mark.usefixtures("stripe_base")  # the pending GA order is a paid one: it needs Stripe
async def test_attendees_json_csv_and_stats(
    client: httpx.AsyncClient, admin: dict[str, str], box: dict[str, str]
) -> None:
    gala = await create_gala(client, admin)
    stalls = await add_reserved(client, admin, gala["id"], theatre_seats("A", 4), name="Stalls")
    floor = await add_general(client, admin, gala["id"], 10, name="Floor")
    vip = await add_ticket_type(client, admin, gala["id"], [stalls["id"]], name="VIP", price_amount=0)
    ga = await add_ticket_type(client, admin, gala["id"], [floor["id"]], name="GA", price_amount=1500, quota=6)
    await publish(client, admin, gala["id"])
    seats = await seat_ids(client, gala["id"])
    await client.post(f"/v1/galas/{gala['id']}/seats/block", json={"seat_ids": [seats["A4"]]}, headers=admin)
    body = order_body(
        gala["id"],
        [
            {
                "ticket_type_id": vip["id"],
                "seat_id": seats["A1"],
                "attendee_name": "=HYPERLINK(1)",
                "dietary": "vegetarian",
            }
        ],
    )
    assert (await client.post("/v1/orders", json=body)).status_code == 201
    cash = {**order_body(gala["id"], [{"ticket_type_id": ga["id"], "quantity": 2}]), "payment_method": "cash"}
    assert (await client.post("/v1/comp-orders", json=cash, headers=box)).status_code == 201
    pending = await client.post(
        "/v1/orders", json=order_body(gala["id"], [{"ticket_type_id": ga["id"], "quantity": 1}])
    )
    assert pending.json()["status"] == "pending"

    page = (await client.get(f"/v1/galas/{gala['id']}/attendees", params={"limit": 2}, headers=admin)).json()
    assert len(page["data"]) == 2 and page["next_cursor"]
    rest = (
        await client.get(f"/v1/galas/{gala['id']}/attendees", params={"cursor": page["next_cursor"]}, headers=admin)
    ).json()
    everyone = page["data"] + rest["data"]
    assert len(everyone) == 3 and rest["next_cursor"] is None
    vip_row = next(a for a in everyone if a["ticket_type"] == "VIP")
    assert (vip_row["seat_label"], vip_row["dietary"], vip_row["section"]) == ("A1", "vegetarian", "Stalls")

    r = await client.get(f"/v1/galas/{gala['id']}/attendees", headers={**admin, "Accept": "text/csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 3
    assert next(row for row in rows if row["ticket_type"] == "VIP")["attendee_name"] == "'=HYPERLINK(1)"

    stats = (await client.get(f"/v1/galas/{gala['id']}/stats", headers=admin)).json()
    assert stats["tickets"] == {"capacity": 14, "sold": 3, "held": 1, "blocked": 1, "available": 9}
    by_tt = {t["name"]: t for t in stats["by_ticket_type"]}
    assert (by_tt["GA"]["sold"], by_tt["GA"]["held"], by_tt["GA"]["available"], by_tt["GA"]["revenue_amount"]) == (
        2,
        1,
        3,
        3000,
    )
    assert stats["orders"]["paid"] == 2 and stats["orders"]["pending"] == 1
    assert stats["revenue"] == {
        "gross_amount": 3000,
        "refunded_amount": 0,
        "net_amount": 3000,
        "by_provider": {"cash": 3000, "free": 0},
    }
    assert stats["check_ins"] == {"admitted": 0, "expected": 3}
    assert (await client.get(f"/v1/galas/{gala['id']}/stats", headers=box)).status_code == 403

    # The treasurer's orders CSV: every order of the gala, amounts and how each was paid.
    csv_headers = {**box, "Accept": "text/csv"}
    r = await client.get("/v1/orders", params={"gala_id": gala["id"], "limit": 1}, headers=csv_headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    orders = {row["payment_provider"]: row for row in csv.DictReader(io.StringIO(r.text))}
    assert set(orders) == {"free", "cash", "stripe"}  # all three, whatever the page size
    assert (orders["cash"]["status"], orders["cash"]["tickets"], orders["cash"]["net_amount"]) == ("paid", "2", "3000")
    card = orders["stripe"]
    assert card["status"] == "pending" and card["total_amount"] == "1500"
    assert card["payment_intent_id"] == pending.json()["payment"]["payment_intent_id"]
    assert orders["free"]["total_amount"] == "0" and orders["free"]["paid_at"]
    r = await client.get("/v1/orders", params={"gala_id": gala["id"], "status": "paid"}, headers=csv_headers)
    assert sorted(row["payment_provider"] for row in csv.DictReader(io.StringIO(r.text))) == ["cash", "free"]

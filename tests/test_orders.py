from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
from fastapi.encoders import jsonable_encoder
from sqlalchemy import func, select
from sqlmodel import col

from tests.conftest import make_settings
from tests.factories import (
    add_general,
    add_reserved,
    add_ticket_type,
    banquet_seats,
    create_gala,
    future,
    on_sale_theatre,
    order_body,
    publish,
    seat_ids,
)
from tests.support import app_client
from tickets.checks import find_violations
from tickets.clock import utc_now
from tickets.config import Settings
from tickets.db import Database
from tickets.orders import service as orders_service
from tickets.orders.errors import SeatUnavailable
from tickets.orders.schemas import OrderCreate
from tickets.problems import ProblemError
from tickets.webhooks.models import OutboxEvent


def seat_item(tier: dict[str, object], seat_id: str, **extra: object) -> dict[str, object]:
    return {"ticket_type_id": tier["id"], "seat_id": seat_id, **extra}


async def seat_status(client: httpx.AsyncClient, gala_id: str) -> dict[str, str]:
    doc = (await client.get(f"/v1/galas/{gala_id}/seats")).json()
    return {s["label"]: s["status"] for sec in doc["sections"] for s in sec["seats"]}


async def test_paid_order_holds_seats_and_starts_payment(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    gala, tier, seats = await on_sale_theatre(client, admin, price=7500)
    r = await client.post(
        "/v1/orders", json=order_body(gala["id"], [seat_item(tier, seats["A1"]), seat_item(tier, seats["A2"])])
    )
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["status"] == "pending"
    assert order["id"].startswith("ord_")
    assert (order["total_amount"], order["currency"]) == (15000, "CAD")
    assert order["payment"]["provider"] == "stripe"
    assert order["payment"]["payment_intent_id"].startswith("pi_")
    assert order["payment"]["client_secret"]
    assert order["expires_at"] is not None
    assert {i["seat_label"] for i in order["items"]} == {"A1", "A2"}
    status = await seat_status(client, gala["id"])
    assert status["A1"] == status["A2"] == "held" and status["A3"] == "available"


async def test_seat_unavailable_names_every_seat_and_holds_nothing(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    gala, tier, seats = await on_sale_theatre(client, admin, price=0)
    first = await client.post(
        "/v1/orders", json=order_body(gala["id"], [seat_item(tier, seats["A1"]), seat_item(tier, seats["A2"])])
    )
    assert first.status_code == 201
    second = await client.post(
        "/v1/orders",
        json=order_body(
            gala["id"], [seat_item(tier, seats["A1"]), seat_item(tier, seats["A2"]), seat_item(tier, seats["A3"])]
        ),
    )
    assert second.status_code == 409
    assert second.headers["content-type"] == "application/problem+json"
    problem = second.json()
    assert problem["code"] == "seat_unavailable"
    assert sorted(u["label"] for u in problem["unavailable"]) == ["A1", "A2"]
    assert {u["seat_id"] for u in problem["unavailable"]} == {seats["A1"], seats["A2"]}
    assert (await seat_status(client, gala["id"]))["A3"] == "available"  # all or nothing


async def test_general_admission_sells_out(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    gala = await create_gala(client, admin)
    floor = await add_general(client, admin, gala["id"], 3)
    tier = await add_ticket_type(client, admin, gala["id"], [floor["id"]], price_amount=0)
    await publish(client, admin, gala["id"])
    r = await client.post("/v1/orders", json=order_body(gala["id"], [{"ticket_type_id": tier["id"], "quantity": 2}]))
    assert r.status_code == 201 and r.json()["status"] == "paid"
    assert all(i["seat_id"] is None and i["section_id"] == floor["id"] for i in r.json()["items"])
    r = await client.post("/v1/orders", json=order_body(gala["id"], [{"ticket_type_id": tier["id"], "quantity": 2}]))
    assert r.status_code == 409 and r.json()["code"] == "sold_out"
    assert r.json()["unavailable"] == [{"ticket_type_id": tier["id"]}]
    r = await client.post("/v1/orders", json=order_body(gala["id"], [{"ticket_type_id": tier["id"], "quantity": 1}]))
    assert r.status_code == 201
    types = (await client.get(f"/v1/galas/{gala['id']}/ticket-types")).json()
    assert types[0]["available"] == 0


async def test_quota_caps_a_tier(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    gala, tier, seats = await on_sale_theatre(client, admin, price=0, quota=2)
    r = await client.post(
        "/v1/orders", json=order_body(gala["id"], [seat_item(tier, seats["A1"]), seat_item(tier, seats["A2"])])
    )
    assert r.status_code == 201
    r = await client.post("/v1/orders", json=order_body(gala["id"], [seat_item(tier, seats["A3"])]))
    assert r.status_code == 409 and r.json()["code"] == "sold_out"
    assert r.json()["unavailable"] == [{"ticket_type_id": tier["id"]}]


async def test_banquet_table_is_one_unit_and_names_come_later(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    gala = await create_gala(client, admin)
    hall = await add_reserved(client, admin, gala["id"], banquet_seats(2, 8), name="Hall")
    tier = await add_ticket_type(client, admin, gala["id"], [hall["id"]], name="Sponsor table", price_amount=0)
    await publish(client, admin, gala["id"])
    r = await client.post("/v1/orders", json=order_body(gala["id"], [{"ticket_type_id": tier["id"], "table": "T1"}]))
    assert r.status_code == 201, r.text
    order = r.json()
    assert len(order["items"]) == 8 and {i["table"] for i in order["items"]} == {"T1"}
    status = await seat_status(client, gala["id"])
    assert all(status[f"T1-{n}"] == "sold" for n in range(1, 9))
    assert all(status[f"T2-{n}"] == "available" for n in range(1, 9))

    # The whole table again, or one of its seats, is unavailable.
    r = await client.post("/v1/orders", json=order_body(gala["id"], [{"ticket_type_id": tier["id"], "table": "T1"}]))
    assert r.status_code == 409 and len(r.json()["unavailable"]) == 8
    r = await client.post("/v1/orders", json=order_body(gala["id"], [{"ticket_type_id": tier["id"], "table": "T9"}]))
    assert r.status_code == 422 and r.json()["code"] == "table_not_found"

    token = {"X-Order-Token": order["access_token"]}
    tickets = (await client.get(f"/v1/orders/{order['id']}/tickets", headers=token)).json()["data"]
    assert len(tickets) == 8 and all(t["attendee_name"] is None for t in tickets)
    r = await client.patch(
        f"/v1/tickets/{tickets[0]['id']}", json={"attendee_name": "Hon. Guest", "dietary": "halal"}, headers=token
    )
    assert r.status_code == 200, r.text
    assert r.json()["attendee_name"] == "Hon. Guest" and r.json()["code"] == tickets[0]["code"]


async def test_per_order_limits(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    gala = await create_gala(client, admin, max_tickets_per_order=3)
    floor = await add_general(client, admin, gala["id"], 50)
    tier = await add_ticket_type(
        client, admin, gala["id"], [floor["id"]], price_amount=0, min_per_order=2, max_per_order=5
    )
    await publish(client, admin, gala["id"])
    r = await client.post("/v1/orders", json=order_body(gala["id"], [{"ticket_type_id": tier["id"], "quantity": 1}]))
    assert r.status_code == 422 and r.json()["code"] == "too_few_tickets"
    r = await client.post("/v1/orders", json=order_body(gala["id"], [{"ticket_type_id": tier["id"], "quantity": 4}]))
    assert r.status_code == 422 and r.json()["code"] == "too_many_tickets"
    r = await client.post("/v1/orders", json=order_body(gala["id"], [{"ticket_type_id": tier["id"], "quantity": 3}]))
    assert r.status_code == 201


async def test_sales_window_and_gala_status(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    gala = await create_gala(client, admin)
    floor = await add_general(client, admin, gala["id"], 50)
    later = await add_ticket_type(
        client, admin, gala["id"], [floor["id"]], name="Later", price_amount=0, sales_start=future(2)
    )
    over = await add_ticket_type(
        client,
        admin,
        gala["id"],
        [floor["id"]],
        name="Over",
        price_amount=0,
        sales_start=(utc_now() - timedelta(days=3)).isoformat(),
        sales_end=(utc_now() - timedelta(days=1)).isoformat(),
    )
    r = await client.post("/v1/orders", json=order_body(gala["id"], [{"ticket_type_id": later["id"], "quantity": 1}]))
    assert r.status_code == 404  # a draft gala does not exist for the public
    await publish(client, admin, gala["id"])
    r = await client.post("/v1/orders", json=order_body(gala["id"], [{"ticket_type_id": later["id"], "quantity": 1}]))
    assert r.status_code == 409 and r.json()["code"] == "sales_not_open"
    r = await client.post("/v1/orders", json=order_body(gala["id"], [{"ticket_type_id": over["id"], "quantity": 1}]))
    assert r.status_code == 409 and r.json()["code"] == "sales_ended"
    await client.post(f"/v1/galas/{gala['id']}/close", headers=admin)
    r = await client.post("/v1/orders", json=order_body(gala["id"], [{"ticket_type_id": over["id"], "quantity": 1}]))
    assert r.status_code == 409 and r.json()["code"] == "gala_not_on_sale"


async def test_invalid_items(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    gala, tier, seats = await on_sale_theatre(client, admin, price=0)
    cases = [
        [{"ticket_type_id": tier["id"], "quantity": 2}],  # reserved tier without a seat
        [{"ticket_type_id": tier["id"], "seat_id": "seat_nope00000000000000"}],
        [{"ticket_type_id": "tt_nope000000000000000", "seat_id": seats["A1"]}],
        [seat_item(tier, seats["A1"]), seat_item(tier, seats["A1"])],
    ]
    for items in cases:
        r = await client.post("/v1/orders", json=order_body(gala["id"], items))
        assert r.status_code == 422 and r.json()["code"] == "invalid_item", (items, r.text)
    r = await client.post("/v1/orders", json=order_body(gala["id"], [seat_item(tier, seats["A1"], quantity=2)]))
    assert r.status_code == 422
    r = await client.post(
        "/v1/orders", json={**order_body(gala["id"], [seat_item(tier, seats["A1"])]), "buyer_email": "nope"}
    )
    assert r.status_code == 422
    assert (await seat_status(client, gala["id"]))["A1"] == "available"


async def test_order_access(
    client: httpx.AsyncClient, admin: dict[str, str], box: dict[str, str], door: dict[str, str]
) -> None:
    gala, tier, seats = await on_sale_theatre(client, admin, price=0)
    a = (await client.post("/v1/orders", json=order_body(gala["id"], [seat_item(tier, seats["A1"])]))).json()
    b = (await client.post("/v1/orders", json=order_body(gala["id"], [seat_item(tier, seats["A2"])]))).json()
    url = f"/v1/orders/{a['id']}"
    assert (await client.get(url, headers={"X-Order-Token": a["access_token"]})).status_code == 200
    r = await client.get(url)
    assert r.status_code == 401 and r.json()["code"] == "invalid_order_token"
    assert (await client.get(url, headers={"X-Order-Token": b["access_token"]})).status_code == 401
    assert (await client.get(url, headers={"X-Order-Token": a["access_token"] + "x"})).status_code == 401
    assert (await client.get(url, headers=box)).status_code == 200
    assert (await client.get(url, headers=admin)).status_code == 200
    assert (await client.get(url, headers=door)).status_code == 403
    assert (await client.get(url, headers={"Authorization": "Bearer tk_wrong"})).status_code == 401
    r = await client.get(f"/v1/orders/{a['id']}/tickets", headers={"X-Order-Token": b["access_token"]})
    assert r.status_code == 401


async def test_list_orders_filters_and_pages(
    client: httpx.AsyncClient, admin: dict[str, str], box: dict[str, str]
) -> None:
    gala, tier, seats = await on_sale_theatre(client, admin, price=0)
    for i, label in enumerate(["A1", "A2", "A3"]):
        body = {**order_body(gala["id"], [seat_item(tier, seats[label])]), "buyer_email": f"buyer{i}@example.org"}
        assert (await client.post("/v1/orders", json=body)).status_code == 201
    page = (await client.get("/v1/orders", params={"gala_id": gala["id"], "limit": 2}, headers=box)).json()
    assert len(page["data"]) == 2 and page["next_cursor"]
    rest = (
        await client.get(
            "/v1/orders", params={"gala_id": gala["id"], "limit": 2, "cursor": page["next_cursor"]}, headers=box
        )
    ).json()
    assert len(rest["data"]) == 1 and rest["next_cursor"] is None
    by_email = (
        await client.get("/v1/orders", params={"gala_id": gala["id"], "email": "BUYER1@example.org"}, headers=box)
    ).json()
    assert [o["buyer_email"] for o in by_email["data"]] == ["buyer1@example.org"]
    paid = (await client.get("/v1/orders", params={"gala_id": gala["id"], "status": "paid"}, headers=admin)).json()
    assert len(paid["data"]) == 3
    r = await client.get("/v1/orders", params={"cursor": "garbage!"}, headers=admin)
    assert r.status_code == 400 and r.json()["code"] == "invalid_cursor"
    r = await client.get("/v1/orders", params={"limit": 500}, headers=admin)
    assert r.status_code == 422


async def test_cancel_releases_holds(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    gala, tier, seats = await on_sale_theatre(client, admin, price=5000)
    order = (await client.post("/v1/orders", json=order_body(gala["id"], [seat_item(tier, seats["B1"])]))).json()
    token = {"X-Order-Token": order["access_token"]}
    r = await client.post(f"/v1/orders/{order['id']}/cancel", headers=token)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert (await seat_status(client, gala["id"]))["B1"] == "available"
    r = await client.post(f"/v1/orders/{order['id']}/cancel", headers=token)
    assert r.status_code == 200  # harmless twice
    again = await client.post("/v1/orders", json=order_body(gala["id"], [seat_item(tier, seats["B1"])]))
    assert again.status_code == 201

    free_gala, free_tier, free_seats = await on_sale_theatre(client, admin, price=0)
    paid = (
        await client.post("/v1/orders", json=order_body(free_gala["id"], [seat_item(free_tier, free_seats["A1"])]))
    ).json()
    r = await client.post(f"/v1/orders/{paid['id']}/cancel", headers={"X-Order-Token": paid["access_token"]})
    assert r.status_code == 409 and r.json()["code"] == "order_not_pending"


async def test_expired_hold_is_free_at_once_and_sweeper_records_it(
    client: httpx.AsyncClient, admin: dict[str, str], db: Database, settings: Settings
) -> None:
    gala, tier, seats = await on_sale_theatre(client, admin, price=0)
    t0 = utc_now() - timedelta(seconds=settings.order_hold_seconds + 60)
    # A pending hold made in the past, through the service (which takes `now`).
    paid_tier = await add_ticket_type(
        client,
        admin,
        gala["id"],
        [(await client.get(f"/v1/galas/{gala['id']}/sections")).json()[0]["id"]],
        name="Paid",
        price_amount=100,
    )
    body = OrderCreate.model_validate(
        order_body(gala["id"], [{"ticket_type_id": paid_tier["id"], "seat_id": seats["A1"]}])
    )
    async with db.sessions() as session:
        old, _ = await orders_service.place_order(session, body, settings=settings, now=t0)
        await session.commit()
    # Within the hold, the seat is taken...
    async with db.sessions() as session:
        with pytest.raises(SeatUnavailable):
            await orders_service.place_order(session, body, settings=settings, now=t0 + timedelta(seconds=5))
        await session.rollback()
    # ...and once it has expired it is free at once, before any sweeper has run.
    assert (await seat_status(client, gala["id"]))["A1"] == "available"
    r = await client.post("/v1/orders", json=order_body(gala["id"], [seat_item(tier, seats["A1"])]))
    assert r.status_code == 201 and r.json()["status"] == "paid"
    read = await client.get(f"/v1/orders/{old.id}", headers=admin)
    assert read.json()["status"] == "expired"

    assert await orders_service.expire_due_orders(db) >= 1
    listed = (await client.get("/v1/orders", params={"gala_id": gala["id"], "status": "expired"}, headers=admin)).json()
    assert [o["id"] for o in listed["data"]] == [old.id]
    assert await orders_service.expire_due_orders(db) == 0  # idempotent: nothing left to do


async def test_idempotency_key(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    gala, tier, seats = await on_sale_theatre(client, admin, price=5000)
    body = order_body(gala["id"], [seat_item(tier, seats["A1"])])
    key = {"Idempotency-Key": f"idem-{gala['id']}"}
    first = await client.post("/v1/orders", json=body, headers=key)
    again = await client.post("/v1/orders", json=body, headers=key)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    other = await client.post("/v1/orders", json=order_body(gala["id"], [seat_item(tier, seats["A2"])]), headers=key)
    assert other.status_code == 409 and other.json()["code"] == "idempotency_key_reused"

    # A refusal is replayed too; a different key is a different request.
    refused_key = {"Idempotency-Key": f"refused-{gala['id']}"}
    r1 = await client.post("/v1/orders", json=body, headers=refused_key)
    r2 = await client.post("/v1/orders", json=body, headers=refused_key)
    assert r1.status_code == r2.status_code == 409 and r1.json() == r2.json()


async def test_concurrent_requests_with_one_key_make_one_order(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    gala = await create_gala(client, admin)
    floor = await add_general(client, admin, gala["id"], 100)
    tier = await add_ticket_type(client, admin, gala["id"], [floor["id"]], price_amount=0)
    await publish(client, admin, gala["id"])
    body = order_body(gala["id"], [{"ticket_type_id": tier["id"], "quantity": 1}])
    key = {"Idempotency-Key": f"race-{gala['id']}"}
    responses = await asyncio.gather(*(client.post("/v1/orders", json=body, headers=key) for _ in range(8)))
    codes = sorted(r.status_code for r in responses)
    assert set(codes) <= {201, 409}
    created = {r.json()["id"] for r in responses if r.status_code == 201}
    assert len(created) == 1
    assert all(r.json()["code"] == "busy" and "retry-after" in r.headers for r in responses if r.status_code == 409)
    # A free order is one transaction, written with its key's answer: a request that did the same work
    # meanwhile rolled all of it back (its place too) and replayed the first answer.
    answers = [r.json() for r in responses if r.status_code == 201]
    assert all(answer == answers[0] for answer in answers)
    orders = (await client.get("/v1/orders", params={"gala_id": gala["id"]}, headers=admin)).json()
    assert len(orders["data"]) == 1
    seat_map = (await client.get(f"/v1/galas/{gala['id']}/seats")).json()
    assert [(s["capacity"], s["available"]) for s in seat_map["sections"]] == [(100, 99)]


async def test_comp_orders_replay_their_first_answer_to_an_idempotency_key(
    client: httpx.AsyncClient, admin: dict[str, str], box: dict[str, str]
) -> None:
    """A comp order is one transaction that writes its key's answer itself (no claim first): a retry
    replays it, a different body is refused, and a refusal is stored and replayed too."""
    gala, tier, seats = await on_sale_theatre(client, admin, price=4000)
    body = {**order_body(gala["id"], [seat_item(tier, seats["A1"])]), "payment_method": "cash"}
    key = {**box, "Idempotency-Key": f"comp-{gala['id']}"}
    first = await client.post("/v1/comp-orders", json=body, headers=key)
    again = await client.post("/v1/comp-orders", json=body, headers=key)
    assert first.status_code == again.status_code == 201, first.text
    assert first.json() == again.json() and again.headers.get("idempotent-replayed") == "true"
    assert "idempotent-replayed" not in first.headers
    other = {**body, "items": [seat_item(tier, seats["A2"])]}
    reused = await client.post("/v1/comp-orders", json=other, headers=key)
    assert reused.status_code == 409 and reused.json()["code"] == "idempotency_key_reused"
    orders = (await client.get("/v1/orders", params={"gala_id": gala["id"]}, headers=admin)).json()["data"]
    assert [o["id"] for o in orders] == [first.json()["id"]]
    status = await seat_status(client, gala["id"])
    assert status["A1"] == "sold" and status["A2"] == "available"

    # A1 is sold: refused, and the refusal is the key's answer even once A1 is free again.
    refused_key = {**box, "Idempotency-Key": f"comp-refused-{gala['id']}"}
    r1 = await client.post("/v1/comp-orders", json=body, headers=refused_key)
    assert r1.status_code == 409 and r1.json()["code"] == "seat_unavailable"
    refund = await client.post(f"/v1/orders/{first.json()['id']}/refunds", json={}, headers=admin)
    assert refund.status_code in (200, 201), refund.text
    assert (await seat_status(client, gala["id"]))["A1"] == "available"
    r2 = await client.post("/v1/comp-orders", json=body, headers=refused_key)
    assert r2.status_code == 409 and r2.json() == r1.json()


async def test_comp_orders_take_blocked_seats(
    client: httpx.AsyncClient, admin: dict[str, str], box: dict[str, str], door: dict[str, str]
) -> None:
    gala, tier, seats = await on_sale_theatre(client, admin, price=12000, max_per_order=1)
    await client.post(
        f"/v1/galas/{gala['id']}/seats/block", json={"seat_ids": [seats["A1"], seats["A2"]]}, headers=admin
    )
    body = {
        **order_body(gala["id"], [seat_item(tier, seats["A1"]), seat_item(tier, seats["A2"])]),
        "payment_method": "comp",
    }
    assert (await client.post("/v1/comp-orders", json=body, headers=door)).status_code == 403
    assert (await client.post("/v1/comp-orders", json=body)).status_code == 401
    r = await client.post("/v1/comp-orders", json=body, headers=box)
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["status"] == "paid" and order["total_amount"] == 0 and order["payment"]["provider"] == "comp"
    cash = {**order_body(gala["id"], [seat_item(tier, seats["B1"])]), "payment_method": "cash"}
    r = await client.post("/v1/comp-orders", json=cash, headers=box)
    assert r.status_code == 201 and r.json()["total_amount"] == 12000 and r.json()["payment"]["provider"] == "cash"
    status = await seat_status(client, gala["id"])
    assert status["A1"] == status["A2"] == status["B1"] == "sold"


async def test_promo_codes(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    gala = await create_gala(client, admin)
    floor = await add_general(client, admin, gala["id"], 100)
    regular = await add_ticket_type(client, admin, gala["id"], [floor["id"]], name="Regular", price_amount=5000)
    youth = await add_ticket_type(client, admin, gala["id"], [floor["id"]], name="Youth", price_amount=2000)
    await publish(client, admin, gala["id"])
    url = f"/v1/galas/{gala['id']}/promo-codes"
    r = await client.post(url, json={"code": "friends10", "discount_kind": "percent", "percent_off": 10}, headers=admin)
    assert r.status_code == 201 and r.json()["code"] == "FRIENDS10"
    r = await client.post(
        url,
        json={
            "code": "YOUTH",
            "discount_kind": "fixed",
            "amount_off": 1500,
            "ticket_type_ids": [youth["id"]],
            "max_uses": 1,
        },
        headers=admin,
    )
    assert r.status_code == 201
    assert (
        await client.post(url, json={"code": "Friends10", "discount_kind": "percent", "percent_off": 5}, headers=admin)
    ).status_code == 409

    items = [{"ticket_type_id": regular["id"], "quantity": 2}, {"ticket_type_id": youth["id"], "quantity": 1}]
    r = await client.post("/v1/orders", json=order_body(gala["id"], items, promo_code="friends10"))
    assert r.status_code == 201, r.text
    assert (r.json()["subtotal_amount"], r.json()["discount_amount"], r.json()["total_amount"]) == (12000, 1200, 10800)

    r = await client.post("/v1/orders", json=order_body(gala["id"], items, promo_code="youth"))
    assert r.status_code == 201
    first_youth = r.json()
    assert (first_youth["discount_amount"], first_youth["total_amount"]) == (1500, 10500)
    r = await client.post("/v1/orders", json=order_body(gala["id"], items, promo_code="YOUTH"))
    assert r.status_code == 409 and r.json()["code"] == "promo_code_exhausted"
    # Cancelling the order gives the use back.
    await client.post(f"/v1/orders/{first_youth['id']}/cancel", headers={"X-Order-Token": first_youth["access_token"]})
    r = await client.post("/v1/orders", json=order_body(gala["id"], items, promo_code="YOUTH"))
    assert r.status_code == 201
    r = await client.post("/v1/orders", json=order_body(gala["id"], [items[0]], promo_code="YOUTH"))
    assert r.status_code == 422 and r.json()["code"] == "promo_code_invalid"
    r = await client.post("/v1/orders", json=order_body(gala["id"], items, promo_code="NOPE"))
    assert r.status_code == 422 and r.json()["code"] == "promo_code_invalid"
    listed = (await client.get(url, headers=admin)).json()
    assert {p["code"]: p["uses"] for p in listed} == {"FRIENDS10": 1, "YOUTH": 1}


async def test_without_stripe_paid_orders_are_refused(
    client: httpx.AsyncClient, admin: dict[str, str], settings: Settings
) -> None:
    gala, tier, seats = await on_sale_theatre(client, admin, price=5000)
    free_tier = await add_ticket_type(
        client,
        admin,
        gala["id"],
        (await client.get(f"/v1/galas/{gala['id']}/ticket-types")).json()[0]["section_ids"],
        name="Free",
        price_amount=0,
    )
    async with app_client(make_settings(settings.database_url, settings.data_dir), "http://bare") as c:
        r = await c.post("/v1/orders", json=order_body(gala["id"], [seat_item(tier, seats["A1"])]))
        assert r.status_code == 409 and r.json()["code"] == "payments_not_configured"
        r = await c.post("/v1/orders", json=order_body(gala["id"], [seat_item(free_tier, seats["A1"])]))
        assert r.status_code == 201 and r.json()["status"] == "paid"
        tickets = (
            await c.get(f"/v1/orders/{r.json()['id']}/tickets", headers={"X-Order-Token": r.json()["access_token"]})
        ).json()
        assert len(tickets["data"]) == 1 and tickets["data"][0]["status"] == "valid"


async def test_draft_seat_map_is_for_staff_only(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    gala = await create_gala(client, admin)
    await add_reserved(client, admin, gala["id"], [{"label": "Z9"}])
    # Staff see a draft's seat map; the public does not.
    assert (await client.get(f"/v1/galas/{gala['id']}/seats")).status_code == 404
    r = await client.get(f"/v1/galas/{gala['id']}/seats", headers=admin)
    assert [s["label"] for s in r.json()["sections"][0]["seats"]] == ["Z9"]


async def test_seats_of_another_gala_or_section_are_invalid_items(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    gala = await create_gala(client, admin)
    stalls = await add_reserved(client, admin, gala["id"], [{"label": "S1"}, {"label": "S2"}], name="Stalls")
    balcony = await add_reserved(client, admin, gala["id"], [{"label": "B1"}], name="Balcony")
    tier = await add_ticket_type(client, admin, gala["id"], [stalls["id"]], price_amount=0)
    await add_ticket_type(client, admin, gala["id"], [balcony["id"]], price_amount=0, name="Balcony")
    await publish(client, admin, gala["id"])
    seats = await seat_ids(client, gala["id"])
    _, _, other_seats = await on_sale_theatre(client, admin, price=0)
    cases = {
        "another gala's seat": [seat_item(tier, seats["S1"]), seat_item(tier, other_seats["A1"])],
        "a seat the tier is not sold for": [seat_item(tier, seats["S1"]), seat_item(tier, seats["B1"])],
    }
    for case, items in cases.items():
        r = await client.post("/v1/orders", json=order_body(gala["id"], items))
        assert r.status_code == 422 and r.json()["code"] == "invalid_item", (case, r.text)
        assert r.json()["errors"][0]["loc"] == ["body", "items", 1], case
    assert set((await seat_status(client, gala["id"])).values()) == {"available"}  # nothing held
    r = await client.post("/v1/orders", json=order_body(gala["id"], [seat_item(tier, seats["S1"])]))
    assert r.status_code == 201 and r.json()["status"] == "paid"
    r = await client.post(
        "/v1/orders", json=order_body(gala["id"], [seat_item(tier, seats["S2"]), seat_item(tier, seats["S1"])])
    )
    assert r.status_code == 409 and r.json()["unavailable"] == [{"seat_id": seats["S1"], "label": "S1"}]
    assert (await seat_status(client, gala["id"]))["S2"] == "available"


async def test_refusals_read_from_the_committed_state_are_the_holds_own_answers(
    client: httpx.AsyncClient, admin: dict[str, str], db: Database, settings: Settings
) -> None:
    """A public order whose seats or places are already taken is refused from the committed state,
    before any lock; the answer must be exactly the one the hold gives (same code, detail and
    extensions), and whatever the hold would refuse for another reason first must still be refused so."""
    gala = await create_gala(client, admin)
    stalls = await add_reserved(client, admin, gala["id"], [{"label": f"A{n}"} for n in range(1, 6)], name="Stalls")
    floor = await add_general(client, admin, gala["id"], 2)
    tier = await add_ticket_type(client, admin, gala["id"], [stalls["id"]], price_amount=0)
    paid_tier = await add_ticket_type(client, admin, gala["id"], [stalls["id"]], price_amount=900, name="Paid")
    floor_tier = await add_ticket_type(client, admin, gala["id"], [floor["id"]], price_amount=0, name="Floor")
    await publish(client, admin, gala["id"])
    seats = await seat_ids(client, gala["id"])
    promo = {"code": "ONCE", "discount_kind": "percent", "percent_off": 10, "max_uses": 1}
    assert (await client.post(f"/v1/galas/{gala['id']}/promo-codes", json=promo, headers=admin)).status_code == 201
    _, _, other_seats = await on_sale_theatre(client, admin, price=0)

    def sold(body: dict[str, object]) -> None:
        assert body["status"] in ("paid", "pending"), body

    # A1 sold (with the promo code's one use), A2 held by a pending card order, A3 blocked, the floor sold out.
    r = await client.post("/v1/orders", json=order_body(gala["id"], [seat_item(tier, seats["A1"])], promo_code="once"))
    sold(r.json())
    sold((await client.post("/v1/orders", json=order_body(gala["id"], [seat_item(paid_tier, seats["A2"])]))).json())
    block = {"seat_ids": [seats["A3"]]}
    assert (await client.post(f"/v1/galas/{gala['id']}/seats/block", json=block, headers=admin)).status_code == 200
    floor_item = {"ticket_type_id": floor_tier["id"], "quantity": 2}
    sold((await client.post("/v1/orders", json=order_body(gala["id"], [floor_item]))).json())
    before = await seat_status(client, gala["id"])

    one_place = {"ticket_type_id": floor_tier["id"], "quantity": 1}
    cases = {
        "sold seat": ([seat_item(tier, seats["A1"]), seat_item(tier, seats["A4"])], None, "seat_unavailable"),
        "held seat": ([seat_item(tier, seats["A2"])], None, "seat_unavailable"),
        "blocked seat": ([seat_item(tier, seats["A3"])], None, "seat_unavailable"),
        "three taken": ([seat_item(tier, seats[s]) for s in ("A3", "A1", "A2", "A5")], None, "seat_unavailable"),
        "sold-out floor": ([seat_item(tier, seats["A4"]), one_place], None, "sold_out"),
        "sold-out floor alone": ([one_place], None, "sold_out"),
        "seat before floor": ([one_place, seat_item(tier, seats["A1"])], None, "seat_unavailable"),
        "another gala's seat": (
            [seat_item(tier, seats["A1"]), seat_item(tier, other_seats["A1"])],
            None,
            "invalid_item",
        ),
        "wrong tier for a seat": ([seat_item(floor_tier, seats["A1"])], None, "invalid_item"),
        "promo code used up": ([seat_item(tier, seats["A1"])], "ONCE", "promo_code_exhausted"),
    }
    for case, (items, code, expected) in cases.items():
        body = order_body(gala["id"], items, **({"promo_code": code} if code else {}))
        async with db.sessions() as session:  # the hold's own answer, rolled back
            with pytest.raises(ProblemError) as held:
                await orders_service.place_order(
                    session, OrderCreate.model_validate(body), settings=settings, now=utc_now()
                )
            await session.rollback()
        key = {"Idempotency-Key": f"{case}-{gala['id']}"}
        r = await client.post("/v1/orders", json=body, headers=key)
        problem = r.json()
        assert (r.status_code, problem["code"]) == (held.value.status, expected), (case, r.text)
        assert problem["detail"] == held.value.detail, case
        for name, value in held.value.extensions.items():
            assert problem[name] == jsonable_encoder(value), (case, name)
        again = await client.post("/v1/orders", json=body, headers=key)
        assert again.headers.get("idempotent-replayed") == "true" and again.json() == problem, case
    assert await seat_status(client, gala["id"]) == before  # nothing held or sold by any refusal
    r = await client.post("/v1/orders", json=order_body(gala["id"], [seat_item(tier, seats["A4"])]))
    sold(r.json())  # and a free seat is still sold


async def test_the_order_that_takes_the_last_seats_marks_the_gala_sold_out_once(
    client: httpx.AsyncClient, admin: dict[str, str], db: Database
) -> None:
    """Free seat orders (on PostgreSQL each one statement, whose read still sees its own seats as free):
    the order that takes the last seats, and only it, marks the gala sold out and queues gala.sold_out."""
    gala, tier, seats = await on_sale_theatre(client, admin, price=0, rows="A", per_row=3)

    async def sold_out_events() -> int:
        async with db.sessions() as session:
            query = select(func.count()).where(
                col(OutboxEvent.type) == "gala.sold_out", col(OutboxEvent.gala_id) == gala["id"]
            )
            return int((await session.execute(query)).scalar_one())

    first = await client.post("/v1/orders", json=order_body(gala["id"], [seat_item(tier, seats["A2"])]))
    assert first.status_code == 201 and first.json()["status"] == "paid", first.text
    assert await sold_out_events() == 0
    last = await client.post(
        "/v1/orders", json=order_body(gala["id"], [seat_item(tier, seats["A3"]), seat_item(tier, seats["A1"])])
    )
    assert last.status_code == 201, last.text
    order = last.json()
    assert order["status"] == "paid" and {i["seat_label"] for i in order["items"]} == {"A1", "A3"}
    assert await sold_out_events() == 1
    assert await seat_status(client, gala["id"]) == {"A1": "sold", "A2": "sold", "A3": "sold"}
    token = {"X-Order-Token": order["access_token"]}
    tickets = (await client.get(f"/v1/orders/{order['id']}/tickets", headers=token)).json()["data"]
    assert sorted((t["seat_label"], t["status"]) for t in tickets) == [("A1", "valid"), ("A3", "valid")]
    again = await client.post("/v1/orders", json=order_body(gala["id"], [seat_item(tier, seats["A1"])]))
    assert again.json()["code"] == "seat_unavailable"
    assert await sold_out_events() == 1


async def test_places_over_two_areas_are_refused_only_when_both_are_full(
    client: httpx.AsyncClient, admin: dict[str, str], database_url: str
) -> None:
    """(On PostgreSQL an order of one area's places is one statement whose rows name the places it takes:
    `tickets check` finds each sold place with its one valid ticket, of the order that bought it.)"""
    gala = await create_gala(client, admin)
    east = await add_general(client, admin, gala["id"], 2, name="East")
    west = await add_general(client, admin, gala["id"], 2, name="West")
    tier = await add_ticket_type(client, admin, gala["id"], [east["id"], west["id"]], price_amount=0)
    await publish(client, admin, gala["id"])

    async def order(quantity: int, **extra: str) -> httpx.Response:
        item = {"ticket_type_id": tier["id"], "quantity": quantity, **extra}
        return await client.post("/v1/orders", json=order_body(gala["id"], [item]))

    assert (await order(2, section_id=east["id"])).status_code == 201
    refused = await order(1, section_id=east["id"])
    assert (refused.status_code, refused.json()["unavailable"]) == (409, [{"section_id": east["id"]}])
    r = await order(2)  # East is full, West has both places left
    assert r.status_code == 201, r.text
    assert {i["section_id"] for i in r.json()["items"]} == {west["id"]}
    refused = await order(1)
    assert (refused.status_code, refused.json()["unavailable"]) == (409, [{"ticket_type_id": tier["id"]}])
    sections = {s["id"]: s["available"] for s in (await client.get(f"/v1/galas/{gala['id']}/sections")).json()}
    assert sections == {east["id"]: 0, west["id"]: 0}
    assert find_violations(database_url) == []

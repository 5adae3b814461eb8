from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import stripe

from tests.conftest import TEST_SECRET, WEBHOOK_SECRET, make_settings
from tests.factories import add_general, add_ticket_type, create_gala, on_sale_theatre, order_body, publish
from tests.stripe_helpers import (
    DECLINE,
    THREE_D_SECURE,
    authenticate,
    card,
    event,
    intent_object,
    pay,
    sign,
    stripe_client,
)
from tests.support import app_client, live_server, stripe_stand_in
from tickets.clock import utc_now
from tickets.config import Settings
from tickets.db import Database
from tickets.orders import service as orders_service
from tickets.orders.schemas import OrderCreate
from tickets.payments import cancellation
from tickets.payments import service as payments_service
from tickets.payments.models import RefundKind, RefundStatus


def seat_item(tier: dict[str, Any], seat_id: str) -> dict[str, Any]:
    return {"ticket_type_id": tier["id"], "seat_id": seat_id}


async def seat_status(client: httpx.AsyncClient, gala_id: str) -> dict[str, str]:
    doc = (await client.get(f"/v1/galas/{gala_id}/seats")).json()
    return {s["label"]: s["status"] for sec in doc["sections"] for s in sec["seats"]}


async def buy(client: httpx.AsyncClient, gala_id: str, items: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    r = await client.post("/v1/orders", json=order_body(gala_id, items, **extra))
    assert r.status_code == 201, r.text
    return dict(r.json())


async def read(client: httpx.AsyncClient, order: dict[str, Any]) -> dict[str, Any]:
    r = await client.get(f"/v1/orders/{order['id']}", headers={"X-Order-Token": order["access_token"]})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def post_event(client: httpx.AsyncClient, payload: bytes, signature: str | None) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return await client.post("/v1/payments/stripe/webhook", content=payload, headers=headers)


# --- a webhook really delivered over HTTP -----------------------------------------------------------


@pytest.fixture(scope="module")
def webhook_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, dict[str, str]]]:
    """A server process and its own Stripe stand-in, which delivers signed webhooks to it."""
    data_dir = tmp_path_factory.mktemp("webhook")
    key = (
        subprocess.run(
            [sys.executable, "-m", "tickets.cli", "create-api-key", "--role", "admin", "--name", "webhook admin"],
            capture_output=True,
            text=True,
            check=True,
            cwd=data_dir,
            env={**os.environ, "DATABASE_URL": database_url, "SECRET_KEY": TEST_SECRET},
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    with stripe_stand_in() as stripe_base:
        env = {
            "DATABASE_URL": database_url,
            "SECRET_KEY": TEST_SECRET,
            "STRIPE_SECRET_KEY": "sk_test_tickets",
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_API_BASE": stripe_base,
            "DATA_DIR": str(data_dir),
            # Its periodic jobs would work on the other tests' rows too (the same database, another Stripe
            # stand-in): a gala cancellation of theirs, say. It is here for webhooks only.
            "SWEEP_INTERVAL_SECONDS": "3600",
        }
        with live_server(env, workers=1, cwd=data_dir) as base:
            r = httpx.post(
                f"{stripe_base}/_config/webhooks/wh_tickets",
                json={
                    "url": f"{base}/v1/payments/stripe/webhook",
                    "secret": WEBHOOK_SECRET,
                    "events": ["payment_intent.succeeded", "payment_intent.payment_failed"],
                },
            )
            r.raise_for_status()
            yield base, stripe_base, {"Authorization": f"Bearer {key}"}


async def test_webhook_over_http_marks_the_order_paid(webhook_server: tuple[str, str, dict[str, str]]) -> None:
    base, stripe_base, admin = webhook_server
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        gala, tier, seats = await on_sale_theatre(c, admin, price=4200)
        order = await buy(c, gala["id"], [seat_item(tier, seats["A1"])])
        assert order["status"] == "pending"
        intent = pay(stripe_base, order["payment"]["payment_intent_id"])
        assert intent["status"] == "succeeded"
        # No read before the webhook: check the database through the staff list, which does not reconcile.
        for _ in range(100):
            listed = (await c.get("/v1/orders", params={"gala_id": gala["id"], "status": "paid"}, headers=admin)).json()
            if listed["data"]:
                break
            await asyncio.sleep(0.1)
        assert [o["id"] for o in listed["data"]] == [order["id"]]
        tickets = (
            await c.get(f"/v1/orders/{order['id']}/tickets", headers={"X-Order-Token": order["access_token"]})
        ).json()
        assert [t["status"] for t in tickets["data"]] == ["valid"]
        assert (await seat_status(c, gala["id"]))["A1"] == "sold"


# --- the in-process app against the stand-in ----------------------------------------------------------


async def test_decline_is_recorded_and_the_hold_stays(
    client: httpx.AsyncClient, admin: dict[str, str], stripe_base: str
) -> None:
    gala, tier, seats = await on_sale_theatre(client, admin, price=3000)
    order = await buy(client, gala["id"], [seat_item(tier, seats["A1"])])
    with pytest.raises(stripe.CardError):
        pay(stripe_base, order["payment"]["payment_intent_id"], card(stripe_base, DECLINE))
    obj = {
        **intent_object(order, status="requires_payment_method"),
        "last_payment_error": {"code": "card_declined", "message": "Your card was declined."},
    }
    r = await post_event(client, *(lambda p: (p, sign(p)))(event("payment_intent.payment_failed", obj)))
    assert r.status_code == 200 and r.json()["outcome"] == "recorded"
    now = await read(client, order)
    assert now["status"] == "pending"
    assert (await seat_status(client, gala["id"]))["A1"] == "held"


async def test_three_d_secure_extends_the_hold_then_pays(
    client: httpx.AsyncClient, admin: dict[str, str], db: Database, settings: Settings, stripe_base: str
) -> None:
    gala, tier, seats = await on_sale_theatre(client, admin, price=3000)
    # An order whose hold is about to run out (made 9m30s ago through the service, which takes `now`).
    t0 = utc_now() - timedelta(seconds=settings.order_hold_seconds - 30)
    body = OrderCreate.model_validate(order_body(gala["id"], [seat_item(tier, seats["A2"])]))
    async with db.sessions() as session:
        made, _ = await orders_service.place_order(session, body, settings=settings, now=t0)
        await session.commit()
        await payments_service.start_payment(session, db, made, settings=settings)
        await session.commit()
    intent = pay(stripe_base, made.payment_intent_id or "", card(stripe_base, THREE_D_SECURE))
    assert intent["status"] == "requires_action"
    token = {"X-Order-Token": (await client.get(f"/v1/orders/{made.id}", headers=admin)).json()["access_token"]}
    assert made.expires_at is not None
    before = made.expires_at
    after = (await client.get(f"/v1/orders/{made.id}", headers=token)).json()  # reading asks Stripe
    assert after["status"] == "pending"
    extended = datetime.fromisoformat(after["expires_at"])
    assert before + timedelta(minutes=4) <= extended <= before + payments_service.MAX_HOLD_EXTENSION
    assert (await seat_status(client, gala["id"]))["A2"] == "held"
    authenticate(stripe_base, made.payment_intent_id or "", made.client_secret or "")
    assert (await client.get(f"/v1/orders/{made.id}", headers=token)).json()["status"] == "paid"


async def test_webhook_signatures_duplicates_and_order(
    client: httpx.AsyncClient, admin: dict[str, str], stripe_base: str
) -> None:
    gala, tier, seats = await on_sale_theatre(client, admin, price=2000)
    order = await buy(client, gala["id"], [seat_item(tier, seats["B1"])])
    payload = event("payment_intent.succeeded", intent_object(order), event_id=f"evt_dup_{order['id']}")

    r = await post_event(client, payload, None)
    assert r.status_code == 400 and r.json()["code"] == "invalid_signature"
    r = await post_event(client, payload, sign(payload, secret="whsec_forged"))
    assert r.status_code == 400 and r.json()["code"] == "invalid_signature"
    r = await post_event(client, payload, sign(payload, timestamp=int(utc_now().timestamp()) - 3600))
    assert r.status_code == 400  # stale
    r = await post_event(client, payload + b" ", sign(payload))
    assert r.status_code == 400  # body changed after signing
    staff = await client.get("/v1/orders", params={"gala_id": gala["id"], "status": "pending"}, headers=admin)
    assert [o["id"] for o in staff.json()["data"]] == [order["id"]]  # nothing forged got through

    pay(stripe_base, order["payment"]["payment_intent_id"])
    r = await post_event(client, payload, sign(payload))
    assert r.status_code == 200 and r.json()["outcome"] == "paid"
    r = await post_event(client, payload, sign(payload))
    assert r.status_code == 200 and r.json()["outcome"] == "duplicate"
    # The same news in another event, and a failure that arrives late, change nothing.
    again = event("payment_intent.succeeded", intent_object(order))
    assert (await post_event(client, again, sign(again))).json()["outcome"] == "already_settled"
    failed = event(
        "payment_intent.payment_failed",
        {**intent_object(order, "requires_payment_method"), "last_payment_error": {"message": "late"}},
    )
    assert (await post_event(client, failed, sign(failed))).json()["outcome"] == "ignored"
    tickets = (await client.get(f"/v1/orders/{order['id']}/tickets", headers=admin)).json()["data"]
    assert len(tickets) == 1 and tickets[0]["status"] == "valid"
    assert (await read(client, order))["status"] == "paid"


async def test_missed_webhook_is_settled_by_reconciliation(
    client: httpx.AsyncClient, admin: dict[str, str], db: Database, settings: Settings, stripe_base: str
) -> None:
    gala, tier, seats = await on_sale_theatre(client, admin, price=2500)
    read_order = await buy(client, gala["id"], [seat_item(tier, seats["A1"])])
    job_order = await buy(client, gala["id"], [seat_item(tier, seats["A2"])])
    pay(stripe_base, read_order["payment"]["payment_intent_id"])
    pay(stripe_base, job_order["payment"]["payment_intent_id"])
    # No webhook reaches this app. Reading the order asks Stripe...
    assert (await read(client, read_order))["status"] == "paid"
    # ...and so does the periodic job, for orders nobody reads.
    listed = (await client.get("/v1/orders", params={"gala_id": gala["id"], "status": "pending"}, headers=admin)).json()
    assert [o["id"] for o in listed["data"]] == [job_order["id"]]
    later = utc_now() + timedelta(minutes=2)
    for _ in range(50):  # other tests' pending orders are in the queue too; each pass takes a batch
        if not await payments_service.reconcile_pending(db, settings, now=later):
            break
    listed = (await client.get("/v1/orders", params={"gala_id": gala["id"], "status": "paid"}, headers=admin)).json()
    assert {o["id"] for o in listed["data"]} == {read_order["id"], job_order["id"]}
    status = await seat_status(client, gala["id"])
    assert status["A1"] == status["A2"] == "sold"


async def _stale_order(db: Database, settings: Settings, body: dict[str, Any]) -> Any:
    """A card order whose hold ran out a minute ago."""
    t0 = utc_now() - timedelta(seconds=settings.order_hold_seconds + 60)
    async with db.sessions() as session:
        made, _ = await orders_service.place_order(session, OrderCreate.model_validate(body), settings=settings, now=t0)
        await session.commit()
        await payments_service.start_payment(session, db, made, settings=settings)
        await session.commit()
    return made


async def test_late_payment_retakes_free_seats(
    client: httpx.AsyncClient, admin: dict[str, str], db: Database, settings: Settings, stripe_base: str
) -> None:
    gala, tier, seats = await on_sale_theatre(client, admin, price=1800)
    made = await _stale_order(db, settings, order_body(gala["id"], [seat_item(tier, seats["B2"])]))
    assert (await seat_status(client, gala["id"]))["B2"] == "available"  # the hold has lapsed
    pay(stripe_base, made.payment_intent_id)
    payload = event(
        "payment_intent.succeeded",
        {
            "id": made.payment_intent_id,
            "status": "succeeded",
            "amount": 1800,
            "currency": "cad",
            "metadata": {"order_id": made.id},
        },
    )
    assert (await post_event(client, payload, sign(payload))).json()["outcome"] == "paid_late"
    order = (await client.get(f"/v1/orders/{made.id}", headers=admin)).json()
    assert order["status"] == "paid"
    assert (await seat_status(client, gala["id"]))["B2"] == "sold"


async def test_late_payment_for_seats_taken_since_is_refunded(
    client: httpx.AsyncClient, admin: dict[str, str], db: Database, settings: Settings, stripe_base: str
) -> None:
    gala, tier, seats = await on_sale_theatre(client, admin, price=1800)
    made = await _stale_order(db, settings, order_body(gala["id"], [seat_item(tier, seats["B3"])]))
    other = await buy(client, gala["id"], [seat_item(tier, seats["B3"])])  # someone else takes the seat
    pay(stripe_base, made.payment_intent_id)
    assert await payments_service.reconcile_order(db, settings, made.id) == "refunded_late"
    order = (await client.get(f"/v1/orders/{made.id}", headers=admin)).json()
    assert order["status"] == "refunded" and order["refunded_amount"] == 1800
    refunds = (await client.get(f"/v1/orders/{made.id}/refunds", headers=admin)).json()
    assert [(r["kind"], r["status"], r["amount"]) for r in refunds] == [("late_payment", "succeeded", 1800)]
    assert refunds[0]["stripe_refund_id"]
    assert (await client.get(f"/v1/orders/{made.id}/tickets", headers=admin)).json()["data"] == []
    assert (await read(client, other))["status"] == "pending"  # the other buyer keeps the seat


async def _paid_order(
    client: httpx.AsyncClient, stripe_base: str, gala_id: str, items: list[dict[str, Any]]
) -> dict[str, Any]:
    order = await buy(client, gala_id, items)
    pay(stripe_base, order["payment"]["payment_intent_id"])
    settled = await read(client, order)
    assert settled["status"] == "paid"
    return settled


async def test_refunds_full_partial_and_over_refund(
    client: httpx.AsyncClient, admin: dict[str, str], box: dict[str, str], stripe_base: str
) -> None:
    gala, tier, seats = await on_sale_theatre(client, admin, price=5000)
    order = await _paid_order(client, stripe_base, gala["id"], [seat_item(tier, seats[s]) for s in ("A1", "A2", "A3")])
    url = f"/v1/orders/{order['id']}/refunds"
    assert (await client.post(url, json={}, headers=box)).status_code == 403

    tickets = (await client.get(f"/v1/orders/{order['id']}/tickets", headers=admin)).json()["data"]
    r = await client.post(url, json={"ticket_ids": [tickets[0]["id"]], "reason": "cannot come"}, headers=admin)
    assert r.status_code == 201, r.text
    assert (r.json()["amount"], r.json()["status"], r.json()["kind"]) == (5000, "succeeded", "manual")
    after = await read(client, order)
    assert (after["status"], after["refunded_amount"]) == ("partially_refunded", 5000)
    by_id = {t["id"]: t for t in (await client.get(f"/v1/orders/{order['id']}/tickets", headers=admin)).json()["data"]}
    assert by_id[tickets[0]["id"]]["status"] == "void" and by_id[tickets[1]["id"]]["status"] == "valid"
    assert (await seat_status(client, gala["id"]))[tickets[0]["seat_label"]] == "available"  # back on sale

    r = await client.post(url, json={"amount": 2500}, headers={**admin, "Idempotency-Key": f"goodwill-{order['id']}"})
    assert r.status_code == 201 and r.json()["amount"] == 2500
    again = await client.post(
        url, json={"amount": 2500}, headers={**admin, "Idempotency-Key": f"goodwill-{order['id']}"}
    )
    assert again.json() == r.json()  # retried, not repeated
    r = await client.post(url, json={"amount": 7501}, headers=admin)
    assert (
        r.status_code == 409 and r.json()["code"] == "refund_exceeds_balance" and r.json()["refundable_amount"] == 7500
    )
    r = await client.post(url, json={"ticket_ids": [tickets[0]["id"]]}, headers=admin)
    assert r.status_code == 422 and r.json()["code"] == "invalid_refund"

    r = await client.post(url, json={}, headers=admin)  # the rest
    assert r.status_code == 201 and r.json()["amount"] == 7500
    final = await read(client, order)
    assert (final["status"], final["refunded_amount"]) == ("refunded", 15000)
    assert all(
        t["status"] == "void"
        for t in (await client.get(f"/v1/orders/{order['id']}/tickets", headers=admin)).json()["data"]
    )
    r = await client.post(url, json={}, headers=admin)
    assert r.status_code == 409 and r.json()["code"] == "order_not_refundable"
    charge = stripe_client(stripe_base).v1.payment_intents.retrieve(order["payment"]["payment_intent_id"])
    assert charge["status"] == "succeeded"
    refunds = (await client.get(f"/v1/orders/{order['id']}/refunds", headers=admin)).json()
    assert sum(r["amount"] for r in refunds if r["status"] == "succeeded") == 15000


async def test_refunding_some_tickets_of_a_free_order_voids_only_those(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """Nothing was paid, so "all the money is back" says nothing: the named tickets go, the others stay."""
    gala, tier, seats = await on_sale_theatre(client, admin, price=0)
    r = await client.post(
        "/v1/orders", json=order_body(gala["id"], [seat_item(tier, seats[s]) for s in ("A1", "A2", "A3")])
    )
    assert r.status_code == 201 and r.json()["status"] == "paid", r.text
    order = r.json()
    url = f"/v1/orders/{order['id']}/refunds"
    tickets = (await client.get(f"/v1/orders/{order['id']}/tickets", headers=admin)).json()["data"]
    r = await client.post(url, json={"ticket_ids": [tickets[1]["id"]], "reason": "cannot come"}, headers=admin)
    assert r.status_code == 201 and r.json()["amount"] == 0, r.text
    statuses = {
        t["id"]: t["status"]
        for t in (await client.get(f"/v1/orders/{order['id']}/tickets", headers=admin)).json()["data"]
    }
    assert statuses == {tickets[0]["id"]: "valid", tickets[1]["id"]: "void", tickets[2]["id"]: "valid"}
    assert (await read(client, order))["status"] == "partially_refunded"
    assert (await seat_status(client, gala["id"]))[tickets[1]["seat_label"]] == "available"

    r = await client.post(url, json={}, headers=admin)  # the whole order
    assert r.status_code == 201, r.text
    assert (await read(client, order))["status"] == "refunded"
    statuses = {
        t["id"]: t["status"]
        for t in (await client.get(f"/v1/orders/{order['id']}/tickets", headers=admin)).json()["data"]
    }
    assert set(statuses.values()) == {"void"}


async def test_external_refund_and_dispute_void_tickets(
    client: httpx.AsyncClient, admin: dict[str, str], stripe_base: str
) -> None:
    gala, tier, seats = await on_sale_theatre(client, admin, price=3000)
    refunded = await _paid_order(client, stripe_base, gala["id"], [seat_item(tier, seats["A1"])])
    disputed = await _paid_order(client, stripe_base, gala["id"], [seat_item(tier, seats["A2"])])
    charge = event(
        "charge.refunded",
        {
            "id": "ch_x",
            "object": "charge",
            "payment_intent": refunded["payment"]["payment_intent_id"],
            "amount": 3000,
            "amount_refunded": 3000,
        },
    )
    assert (await post_event(client, charge, sign(charge))).json()["outcome"] == "refund_recorded"
    assert (await post_event(client, charge, sign(charge))).json()["outcome"] == "duplicate"
    assert (await read(client, refunded))["status"] == "refunded"
    dispute = event(
        "charge.dispute.created",
        {"id": "dp_x", "object": "dispute", "payment_intent": disputed["payment"]["payment_intent_id"]},
    )
    assert (await post_event(client, dispute, sign(dispute))).json()["outcome"] == "tickets_voided"
    for order in (refunded, disputed):
        tickets = (await client.get(f"/v1/orders/{order['id']}/tickets", headers=admin)).json()["data"]
        assert [t["status"] for t in tickets] == ["void"]


async def test_gala_cancellation_refunds_every_paid_order_once(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    box: dict[str, str],
    db: Database,
    settings: Settings,
    stripe_base: str,
) -> None:
    gala = await create_gala(client, admin)
    floor = await add_general(client, admin, gala["id"], 50)
    tier = await add_ticket_type(client, admin, gala["id"], [floor["id"]], price_amount=2000)
    await publish(client, admin, gala["id"])
    paid = [
        await _paid_order(client, stripe_base, gala["id"], [{"ticket_type_id": tier["id"], "quantity": n}])
        for n in (1, 2, 3)
    ]
    comp = (
        await client.post(
            "/v1/comp-orders",
            headers=box,
            json={**order_body(gala["id"], [{"ticket_type_id": tier["id"], "quantity": 1}]), "payment_method": "comp"},
        )
    ).json()
    pending = await buy(client, gala["id"], [{"ticket_type_id": tier["id"], "quantity": 1}])

    r = await client.post(f"/v1/galas/{gala['id']}/cancel", json={"reason": "Venue flooded"}, headers=admin)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "cancelled" and r.json()["cancellation"]["orders_total"] == 3
    for _ in range(100):
        job = (await client.get(f"/v1/galas/{gala['id']}")).json()["cancellation"]
        if job["state"] == "completed":
            break
        await asyncio.sleep(0.1)
    assert (job["orders_refunded"], job["refunded_amount"], job["failures"]) == (3, 12000, 0)
    for order in paid:
        assert (await read(client, order))["status"] == "refunded"
    assert (await read(client, pending))["status"] == "cancelled"
    for order in (*paid, comp):
        tickets = (await client.get(f"/v1/orders/{order['id']}/tickets", headers=admin)).json()["data"]
        assert tickets and all(t["status"] == "void" for t in tickets)
    # Running the job again (a restart, another worker) refunds nothing twice.
    await cancellation.run(db, settings, gala["id"])
    await client.post(f"/v1/galas/{gala['id']}/cancel", headers=admin)
    for order in paid:
        refunds = (await client.get(f"/v1/orders/{order['id']}/refunds", headers=admin)).json()
        assert [(r["kind"], r["amount"]) for r in refunds] == [("gala_cancelled", order["total_amount"])]
    r = await client.post("/v1/orders", json=order_body(gala["id"], [{"ticket_type_id": tier["id"], "quantity": 1}]))
    assert r.status_code == 409 and r.json()["code"] == "gala_not_on_sale"


async def test_stripe_down_releases_the_hold(
    client: httpx.AsyncClient, admin: dict[str, str], settings: Settings
) -> None:
    gala, tier, seats = await on_sale_theatre(client, admin, price=2000)
    broken = make_settings(
        settings.database_url,
        settings.data_dir,
        stripe_secret_key="sk_test_x",
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_api_base="http://127.0.0.1:9",
        stripe_timeout_seconds=2,
    )
    async with app_client(broken, "http://broken") as c:
        r = await c.post("/v1/orders", json=order_body(gala["id"], [seat_item(tier, seats["A1"])]))
    assert r.status_code == 502 and r.json()["code"] == "payment_provider_error"
    assert (await seat_status(client, gala["id"]))["A1"] == "available"
    assert (await buy(client, gala["id"], [seat_item(tier, seats["A1"])]))["status"] == "pending"


async def test_concurrent_runs_of_one_refund_key_refund_once_and_all_answer(
    client: httpx.AsyncClient, admin: dict[str, str], db: Database, settings: Settings, stripe_base: str
) -> None:
    """Two runs of a gala's cancellation job (two workers, a restart) refund an order under one key at
    the same time: one claims the refund, the others finish that same refund instead of failing on a
    balance that their own claim has used up."""
    gala = await create_gala(client, admin)
    floor = await add_general(client, admin, gala["id"], 10)
    tier = await add_ticket_type(client, admin, gala["id"], [floor["id"]], price_amount=1500)
    await publish(client, admin, gala["id"])
    order = await _paid_order(client, stripe_base, gala["id"], [{"ticket_type_id": tier["id"], "quantity": 2}])
    refunds = await asyncio.gather(
        *(
            payments_service.refund_order(
                db,
                settings,
                order["id"],
                amount=None,
                ticket_ids=None,
                reason="The gala was cancelled",
                kind=RefundKind.gala_cancelled,
                key=f"gala-cancel:{order['id']}",
            )
            for _ in range(4)
        )
    )
    assert len({r.id for r in refunds}) == 1 and {r.status for r in refunds} == {RefundStatus.succeeded}
    after = await read(client, order)
    assert (after["status"], after["refunded_amount"]) == ("refunded", 3000)
    listed = (await client.get(f"/v1/orders/{order['id']}/refunds", headers=admin)).json()
    assert [(r["kind"], r["amount"]) for r in listed] == [("gala_cancelled", 3000)]


async def test_one_idempotency_key_on_two_orders_is_two_refunds(
    client: httpx.AsyncClient, admin: dict[str, str], stripe_base: str
) -> None:
    gala = await create_gala(client, admin)
    floor = await add_general(client, admin, gala["id"], 10)
    tier = await add_ticket_type(client, admin, gala["id"], [floor["id"]], price_amount=1000)
    await publish(client, admin, gala["id"])
    item = [{"ticket_type_id": tier["id"], "quantity": 1}]
    orders = [await _paid_order(client, stripe_base, gala["id"], item) for _ in range(2)]
    key = {**admin, "Idempotency-Key": "k" * 255}  # the longest key: the refund's own key stays in its column
    made = [await client.post(f"/v1/orders/{o['id']}/refunds", json={}, headers=key) for o in orders]
    assert [r.status_code for r in made] == [201, 201], [r.text for r in made]
    assert [r.json()["order_id"] for r in made] == [o["id"] for o in orders]
    for order in orders:
        assert (await read(client, order))["status"] == "refunded"

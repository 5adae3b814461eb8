"""The gate in front of the order and scan routes (tickets.gate): a few requests of a worker at a time,
first come, first served; a request waiting on Stripe lets the next one in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

from tests.conftest import WEBHOOK_SECRET, make_settings
from tests.factories import add_general, add_ticket_type, create_gala, order_body, publish
from tests.support import app_client
from tickets.gate import Gate


async def test_the_gate_lets_a_few_in_at_a_time_in_arrival_order() -> None:
    gate = Gate(2)
    inside = most = 0
    entered: list[int] = []

    async def visitor(n: int) -> None:
        nonlocal inside, most
        await gate.enter()
        inside += 1
        most = max(most, inside)
        entered.append(n)
        await asyncio.sleep(0.01)
        inside -= 1
        gate.leave()

    await asyncio.gather(*(visitor(n) for n in range(9)))
    assert most == 2 and entered == list(range(9)) and gate.inside == 0


async def test_a_visitor_cancelled_while_waiting_takes_no_place_and_loses_none() -> None:
    gate = Gate(1)
    await gate.enter()  # the one inside
    waiting = [asyncio.create_task(gate.enter()) for _ in range(3)]
    await asyncio.sleep(0)
    waiting[0].cancel()  # gives up while waiting
    await asyncio.sleep(0)
    gate.leave()  # hands its place to the next in line that still waits: waiting[1]
    waiting[1].cancel()  # ... which is cancelled before it runs: it passes the place on
    await asyncio.sleep(0)
    assert waiting[0].cancelled() and waiting[1].cancelled()
    await asyncio.wait_for(waiting[2], timeout=1)
    assert gate.inside == 1
    gate.leave()
    assert gate.inside == 0
    await gate.enter()  # free again: enters at once
    assert gate.inside == 1


async def test_with_one_place_concurrent_orders_and_scans_all_get_their_answer(
    database_url: str, tmp_path: Path, admin: dict[str, str], door: dict[str, str]
) -> None:
    """A limit of one: every request waits its turn, and none waits for ever (a request holding a lock
    that another waits for is always inside the gate, or in another process)."""
    settings = make_settings(database_url, tmp_path, hot_path_concurrency=1)
    async with app_client(settings) as client:
        gala = await create_gala(client, admin)
        floor = await add_general(client, admin, gala["id"], 30)
        tier = await add_ticket_type(client, admin, gala["id"], [floor["id"]], price_amount=0)
        await publish(client, admin, gala["id"])
        one = order_body(gala["id"], [{"ticket_type_id": tier["id"], "quantity": 1}])
        orders = await asyncio.gather(*(client.post("/v1/orders", json=one) for _ in range(12)))
        assert [r.status_code for r in orders] == [201] * 12
        # One Idempotency-Key, eight times at once: one order, the same answer eight times.
        key = {"Idempotency-Key": f"gate-{gala['id']}"}
        same = await asyncio.gather(*(client.post("/v1/orders", json=one, headers=key) for _ in range(8)))
        assert [r.status_code for r in same] == [201] * 8 and len({r.text for r in same}) == 1
        codes = []
        for r in orders:
            token = {"X-Order-Token": r.json()["access_token"]}
            tickets = (await client.get(f"/v1/orders/{r.json()['id']}/tickets", headers=token)).json()["data"]
            codes += [t["code"] for t in tickets]
        scans = await asyncio.gather(
            *(client.post("/v1/scans", json={"code": c, "gala_id": gala["id"]}, headers=door) for c in codes * 2)
        )
        results = [r.json()["result"] for r in scans]
        assert all(r.status_code == 200 for r in scans)
        assert results.count("admitted") == 12 and results.count("already_checked_in") == 12
        seat_map = (await client.get(f"/v1/galas/{gala['id']}/seats")).json()
        assert seat_map["sections"][0]["available"] == 30 - 13


@asynccontextmanager
async def slow_proxy(target: str, delay: float) -> AsyncIterator[str]:
    """A TCP proxy on loopback in front of `target` (http://host:port) that holds every new connection
    for `delay` seconds before passing it on: a slow payment provider."""
    parts = urlsplit(target)
    assert parts.hostname is not None and parts.port is not None
    host, port = parts.hostname, parts.port

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(delay)
        up_reader, up_writer = await asyncio.open_connection(host, port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_an_order_waiting_on_stripe_lets_the_next_request_in(
    database_url: str, tmp_path: Path, stripe_base: str, admin: dict[str, str]
) -> None:
    async with slow_proxy(stripe_base, delay=1.5) as slow_stripe:
        settings = make_settings(
            database_url,
            tmp_path,
            hot_path_concurrency=1,
            stripe_secret_key="sk_test_tickets",
            stripe_webhook_secret=WEBHOOK_SECRET,
            stripe_api_base=slow_stripe,
        )
        async with app_client(settings) as client:
            galas = []
            for price in (2500, 0):
                gala = await create_gala(client, admin)
                floor = await add_general(client, admin, gala["id"], 10)
                tier = await add_ticket_type(client, admin, gala["id"], [floor["id"]], price_amount=price)
                await publish(client, admin, gala["id"])
                galas.append(order_body(gala["id"], [{"ticket_type_id": tier["id"], "quantity": 1}]))
            priced, free = galas
            card = asyncio.create_task(client.post("/v1/orders", json=priced))
            await asyncio.sleep(0.5)  # the card order is inside, waiting on Stripe
            assert not card.done()
            quick = await asyncio.wait_for(client.post("/v1/orders", json=free), timeout=1.0)
            assert quick.status_code == 201 and quick.json()["status"] == "paid"
            assert not card.done(), "the free order went through while the card order waited on Stripe"
            paid = await card
            assert paid.status_code == 201 and paid.json()["status"] == "pending"
            assert paid.json()["payment"]["client_secret"]


async def test_a_visitor_coming_back_goes_in_ahead_of_the_line() -> None:
    """`enter(first=True)`: a request back from Stripe is let in before those that have not been in yet."""
    gate = Gate(1)
    await gate.enter()  # the one inside
    order: list[str] = []

    async def visitor(name: str, *, first: bool = False) -> None:
        await gate.enter(first=first)
        order.append(name)
        gate.leave()

    line = [asyncio.create_task(visitor(name)) for name in ("a", "b")]
    await asyncio.sleep(0)
    back = asyncio.create_task(visitor("back", first=True))
    await asyncio.sleep(0)
    gate.leave()
    await asyncio.wait_for(asyncio.gather(*line, back), timeout=1)
    assert order == ["back", "a", "b"] and gate.inside == 0

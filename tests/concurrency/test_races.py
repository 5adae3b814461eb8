"""Races for real: several server processes (`tickets serve --workers 2`) against one database,
hammered by hundreds of concurrent buyers. Then the database itself is checked.

`test_the_race_is_real_without_protection` runs the same race against a server whose hold is a naive
check-then-write, and shows that the checks do catch the double sale: the race tests can fail.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_SECRET, WEBHOOK_SECRET
from tests.support import live_server, scratch_database
from tickets.checks import find_violations
from tickets.migrate import upgrade_to_head

pytestmark = pytest.mark.race

BUYERS = 300


def server_env(database_url: str, stripe_base: str, data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "SECRET_KEY": TEST_SECRET,
        "DATA_DIR": str(data_dir),
        "STRIPE_SECRET_KEY": "sk_test_race",
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_API_BASE": stripe_base,
        "DB_POOL_SIZE": "10",
        # No gate (tickets.gate): every request a worker accepts runs at once, the most interleavings
        # for the races to find (the gate is not what protects the inventory; tests/test_gate.py).
        "HOT_PATH_CONCURRENCY": "0",
        **extra,
    }


def make_admin_key(database_url: str, data_dir: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "tickets.cli", "create-api-key", "--role", "admin", "--name", "race admin"],
        capture_output=True,
        text=True,
        check=True,
        cwd=data_dir,
        env={**os.environ, "DATABASE_URL": database_url, "SECRET_KEY": TEST_SECRET},
    )
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def server(
    database_url: str, stripe_base: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    data_dir = tmp_path_factory.mktemp("race")
    key = make_admin_key(database_url, data_dir)
    with live_server(server_env(database_url, stripe_base, data_dir), workers=2, cwd=data_dir) as base:
        yield base, {"Authorization": f"Bearer {key}"}


async def setup_gala(
    c: httpx.AsyncClient,
    admin: dict[str, str],
    *,
    seats: int = 0,
    places: int = 0,
    price: int = 0,
    quota: int | None = None,
) -> dict[str, Any]:
    r = await c.post(
        "/v1/galas",
        headers=admin,
        json={
            "title": "Sell-out",
            "venue_name": "Hall",
            "starts_at": "2030-01-01T19:00:00Z",
            "timezone": "America/Toronto",
        },
    )
    gala = r.json()
    out: dict[str, Any] = {"gala": gala}
    if seats:
        sec = (
            await c.post(
                f"/v1/galas/{gala['id']}/sections",
                headers=admin,
                json={"name": "Stalls", "kind": "reserved", "seats": [{"label": f"S{i}"} for i in range(seats)]},
            )
        ).json()
        tier = (
            await c.post(
                f"/v1/galas/{gala['id']}/ticket-types",
                headers=admin,
                json={"name": "Seat", "price_amount": price, "section_ids": [sec["id"]]},
            )
        ).json()
        seat_map = (await c.get(f"/v1/galas/{gala['id']}/seats", headers=admin)).json()
        out.update(section=sec, tier=tier, seat_ids=[s["id"] for s in seat_map["sections"][0]["seats"]])
    if places:
        area = (
            await c.post(
                f"/v1/galas/{gala['id']}/sections",
                headers=admin,
                json={"name": "Floor", "kind": "general", "capacity": places},
            )
        ).json()
        body: dict[str, Any] = {"name": "Floor", "price_amount": price, "section_ids": [area["id"]]}
        if quota is not None:
            body["quota"] = quota
        tier = (await c.post(f"/v1/galas/{gala['id']}/ticket-types", headers=admin, json=body)).json()
        out.update(area=area, tier=tier)
    r = await c.post(f"/v1/galas/{gala['id']}/publish", headers=admin)
    assert r.status_code == 200, r.text
    return out


async def rush(base: str, bodies: list[dict[str, Any]], *, connections: int = 64) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as c:
        return list(await asyncio.gather(*(c.post("/v1/orders", json=b) for b in bodies)))


def buyer(gala_id: str, items: list[dict[str, Any]], n: int, **extra: Any) -> dict[str, Any]:
    return {
        "gala_id": gala_id,
        "buyer_email": f"buyer{n}@example.org",
        "buyer_name": f"Buyer {n}",
        "items": items,
        **extra,
    }


def summarise(responses: list[httpx.Response]) -> Counter[str]:
    return Counter(f"{r.status_code} {r.json().get('code', '')}".strip() for r in responses)


async def live_seat_owners(c: httpx.AsyncClient, admin: dict[str, str], gala_id: str) -> Counter[str]:
    """How many live orders (pending and unexpired, or paid) hold each seat or place, read through the API."""
    owners: Counter[str] = Counter()
    cursor = None
    while True:
        params: dict[str, Any] = {"gala_id": gala_id, "limit": 200}
        if cursor:
            params["cursor"] = cursor
        page = (await c.get("/v1/orders", params=params, headers=admin)).json()
        for order in page["data"]:
            if order["status"] in ("pending", "paid"):
                for item in order["items"]:
                    owners[item["seat_id"] or item["id"]] += 1
        cursor = page["next_cursor"]
        if not cursor:
            return owners


@pytest.mark.parametrize("price", [2500, 0], ids=["held for payment", "sold at once"])
async def test_reserved_seats_never_sold_twice(
    server: tuple[str, dict[str, str]], database_url: str, price: int
) -> None:
    """Overlapping pairs of seats: on PostgreSQL each order is one statement that takes both seats or
    neither (a card order's hold, a free order's sale with its tickets)."""
    base, admin = server
    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
        setup = await setup_gala(c, admin, seats=30, price=price)
        rng = random.Random(7)
        bodies = [
            buyer(
                setup["gala"]["id"],
                [{"ticket_type_id": setup["tier"]["id"], "seat_id": s} for s in rng.sample(setup["seat_ids"], 2)],
                n,
            )
            for n in range(BUYERS)
        ]
        responses = await rush(base, bodies)
        summary = summarise(responses)
        assert not any(r.status_code >= 500 for r in responses), summary
        assert set(summary) <= {"201", "409 seat_unavailable", "409 busy"}, summary
        won = [r.json() for r in responses if r.status_code == 201]
        status = "pending" if price else "paid"
        assert all(len(o["items"]) == 2 and o["status"] == status for o in won)
        taken = Counter(i["seat_id"] for o in won for i in o["items"])
        assert max(taken.values()) == 1, "a seat was held by two orders"
        assert 1 <= len(won) <= 15
        owners = await live_seat_owners(c, admin, setup["gala"]["id"])
        assert owners and max(owners.values()) == 1
        seat_map = (await c.get(f"/v1/galas/{setup['gala']['id']}/seats")).json()
        held = {s["id"] for s in seat_map["sections"][0]["seats"] if s["status"] == ("held" if price else "sold")}
        assert held == set(taken)
        if not price:  # one valid ticket for each seat sold, in the order that bought it
            for o in won:
                token = {"X-Order-Token": o["access_token"]}
                tickets = (await c.get(f"/v1/orders/{o['id']}/tickets", headers=token)).json()["data"]
                assert sorted(t["seat_id"] for t in tickets if t["status"] == "valid") == sorted(
                    i["seat_id"] for i in o["items"]
                )
    assert find_violations(database_url) == []


async def test_general_admission_sells_out_exactly(server: tuple[str, dict[str, str]], database_url: str) -> None:
    base, admin = server
    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
        setup = await setup_gala(c, admin, places=100)
        bodies = [
            buyer(setup["gala"]["id"], [{"ticket_type_id": setup["tier"]["id"], "quantity": 1}], n)
            for n in range(BUYERS)
        ]
        responses = await rush(base, bodies)
        summary = summarise(responses)
        assert not any(r.status_code >= 500 for r in responses), summary
        assert summary["201"] == 100, summary
        assert set(summary) <= {"201", "409 sold_out", "409 busy"}, summary
        types = (await c.get(f"/v1/galas/{setup['gala']['id']}/ticket-types")).json()
        assert types[0]["available"] == 0
        sections = (await c.get(f"/v1/galas/{setup['gala']['id']}/sections")).json()
        assert (sections[0]["capacity"], sections[0]["available"]) == (100, 0)
        owners = await live_seat_owners(c, admin, setup["gala"]["id"])
        assert len(owners) == 100 and max(owners.values()) == 1
    assert find_violations(database_url) == []


async def test_held_plus_sold_never_exceeds_a_quota(server: tuple[str, dict[str, str]], database_url: str) -> None:
    base, admin = server
    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
        setup = await setup_gala(c, admin, places=200, price=1500, quota=40)
        bodies = [
            buyer(setup["gala"]["id"], [{"ticket_type_id": setup["tier"]["id"], "quantity": 1 + n % 3}], n)
            for n in range(BUYERS)
        ]
        responses = await rush(base, bodies)
        summary = summarise(responses)
        assert not any(r.status_code >= 500 for r in responses), summary
        sold = sum(len(r.json()["items"]) for r in responses if r.status_code == 201)
        assert 0 < sold <= 40, summary
        types = (await c.get(f"/v1/galas/{setup['gala']['id']}/ticket-types")).json()
        assert types[0]["available"] == 40 - sold
        # Whatever the rush left (its last buyers may have wanted more than remained) can still be
        # bought, exactly, and then the tier is sold out.
        if sold < 40:
            r = await c.post(
                "/v1/orders",
                json=buyer(setup["gala"]["id"], [{"ticket_type_id": setup["tier"]["id"], "quantity": 40 - sold}], 9999),
            )
            assert r.status_code == 201, r.text
        r = await c.post(
            "/v1/orders",
            json=buyer(setup["gala"]["id"], [{"ticket_type_id": setup["tier"]["id"], "quantity": 1}], 10000),
        )
        assert r.status_code == 409 and r.json()["code"] == "sold_out"
    assert find_violations(database_url) == []


async def test_promo_code_limit_holds_under_a_rush(server: tuple[str, dict[str, str]], database_url: str) -> None:
    base, admin = server
    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
        setup = await setup_gala(c, admin, places=500, price=1000)
        r = await c.post(
            f"/v1/galas/{setup['gala']['id']}/promo-codes",
            headers=admin,
            json={"code": "FIRST10", "discount_kind": "fixed", "amount_off": 1000, "max_uses": 10},
        )
        assert r.status_code == 201
        bodies = [
            buyer(
                setup["gala"]["id"], [{"ticket_type_id": setup["tier"]["id"], "quantity": 1}], n, promo_code="first10"
            )
            for n in range(BUYERS)
        ]
        responses = await rush(base, bodies)
        summary = summarise(responses)
        assert not any(r.status_code >= 500 for r in responses), summary
        assert summary["201"] == 10, summary
        assert set(summary) <= {"201", "409 promo_code_exhausted", "409 busy"}, summary
        assert all(
            r.json()["total_amount"] == 0 and r.json()["status"] == "paid" for r in responses if r.status_code == 201
        )
        promos = (await c.get(f"/v1/galas/{setup['gala']['id']}/promo-codes", headers=admin)).json()
        assert promos[0]["uses"] == 10
    assert find_violations(database_url) == []


async def test_the_race_is_real_without_protection(stripe_base: str, tmp_path: Path) -> None:
    """The same seat race against a server with naive holds (UNSAFE_NAIVE_HOLDS): seats get sold twice,
    and both the API-level check and `tickets check` see it. So the tests above can fail."""
    with scratch_database(os.environ.get("TEST_DATABASE_URL"), tmp_path) as url:
        upgrade_to_head(url)
        key = make_admin_key(url, tmp_path)
        admin = {"Authorization": f"Bearer {key}"}
        env = server_env(url, stripe_base, tmp_path, UNSAFE_NAIVE_HOLDS="true")
        with live_server(env, workers=2, cwd=tmp_path) as base:
            async with httpx.AsyncClient(base_url=base, timeout=60) as c:
                setup = await setup_gala(c, admin, seats=5, price=2500)
                bodies = [
                    buyer(
                        setup["gala"]["id"],
                        [{"ticket_type_id": setup["tier"]["id"], "seat_id": setup["seat_ids"][n % 5]}],
                        n,
                    )
                    for n in range(200)
                ]
                responses = await rush(base, bodies)
                won = [r.json() for r in responses if r.status_code == 201]
                taken = Counter(i["seat_id"] for o in won for i in o["items"])
                assert max(taken.values()) > 1, "the naive hold did not oversell: the race is not being exercised"
                owners = await live_seat_owners(c, admin, setup["gala"]["id"])
                assert max(owners.values()) > 1
        violations = find_violations(url)
        assert any("live orders" in v for v in violations), violations
        result = subprocess.run(
            [sys.executable, "-m", "tickets.cli", "check"],
            capture_output=True,
            text=True,
            env={**os.environ, "DATABASE_URL": url},
        )
        assert result.returncode == 1 and "live orders" in result.stdout


async def test_a_fresh_worker_can_sell_first(stripe_base: str, tmp_path: Path) -> None:
    """A worker whose very first request is a public order (a restarted worker in a rush) sells: the
    order's plan is read without the ORM, which must not depend on an earlier request having set the
    ORM up. The gala is made through another process, so that the server has served nothing before."""
    with scratch_database(os.environ.get("TEST_DATABASE_URL"), tmp_path) as url:
        upgrade_to_head(url)
        key = make_admin_key(url, tmp_path)
        admin = {"Authorization": f"Bearer {key}"}
        env = server_env(url, stripe_base, tmp_path)
        with live_server(env, workers=1, cwd=tmp_path) as setup_base:
            async with httpx.AsyncClient(base_url=setup_base, timeout=60) as c:
                setup = await setup_gala(c, admin, places=5)
        with live_server(env, workers=1, cwd=tmp_path) as base:
            async with httpx.AsyncClient(base_url=base, timeout=60) as c:
                body = buyer(setup["gala"]["id"], [{"ticket_type_id": setup["tier"]["id"], "quantity": 2}], 1)
                r = await c.post("/v1/orders", json=body)
                assert r.status_code == 201 and r.json()["status"] == "paid", r.text

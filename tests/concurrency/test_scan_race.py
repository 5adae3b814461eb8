"""A door rush for real: `tickets serve --workers 2` against one database, and dozens of concurrent
scans of the same code from several gates. Exactly one is admitted; the database agrees."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import TEST_SECRET
from tests.support import live_server
from tickets.config import sync_database_url

pytestmark = pytest.mark.race

SCANS = 60
GATES = ("North", "South", "East")


def make_key(database_url: str, data_dir: Path, role: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "tickets.cli", "create-api-key", "--role", role, "--name", f"race {role}"],
        capture_output=True,
        text=True,
        check=True,
        cwd=data_dir,
        env={**os.environ, "DATABASE_URL": database_url, "SECRET_KEY": TEST_SECRET},
    )
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def door_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str], dict[str, str]]]:
    data_dir = tmp_path_factory.mktemp("door-race")
    admin = {"Authorization": f"Bearer {make_key(database_url, data_dir, 'admin')}"}
    door = {"Authorization": f"Bearer {make_key(database_url, data_dir, 'door')}"}
    env = {"DATABASE_URL": database_url, "SECRET_KEY": TEST_SECRET, "DATA_DIR": str(data_dir), "DB_POOL_SIZE": "10"}
    with live_server(env, workers=2, cwd=data_dir) as base:
        yield base, admin, door


async def free_tickets(c: httpx.AsyncClient, admin: dict[str, str], count: int) -> tuple[str, list[dict[str, Any]]]:
    """A published gala with a free general-admission tier, and one paid order of `count` tickets."""
    r = await c.post(
        "/v1/galas",
        headers=admin,
        json={"title": "Door rush", "venue_name": "Hall", "starts_at": "2030-01-01T19:00:00Z", "timezone": "UTC"},
    )
    gala_id = r.json()["id"]
    area = (
        await c.post(
            f"/v1/galas/{gala_id}/sections", headers=admin, json={"name": "Floor", "kind": "general", "capacity": 10}
        )
    ).json()
    tier = (
        await c.post(
            f"/v1/galas/{gala_id}/ticket-types",
            headers=admin,
            json={"name": "Free", "price_amount": 0, "section_ids": [area["id"]]},
        )
    ).json()
    assert (await c.post(f"/v1/galas/{gala_id}/publish", headers=admin)).status_code == 200
    r = await c.post(
        "/v1/orders",
        json={
            "gala_id": gala_id,
            "buyer_email": "guest@example.org",
            "buyer_name": "Guest",
            "items": [{"ticket_type_id": tier["id"], "quantity": count}],
        },
    )
    assert r.status_code == 201 and r.json()["status"] == "paid", r.text
    order = r.json()
    tickets = (
        await c.get(f"/v1/orders/{order['id']}/tickets", headers={"X-Order-Token": order["access_token"]})
    ).json()["data"]
    return gala_id, tickets


async def test_one_admission_however_many_scans_race(
    door_server: tuple[str, dict[str, str], dict[str, str]], database_url: str
) -> None:
    base, admin, door = door_server
    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
        gala_id, tickets = await free_tickets(c, admin, 2)
    contested, other = tickets
    # 60 scans of one code and 30 of another, interleaved, from three gates and many devices at once.
    bodies = [
        {"code": contested["code"], "gala_id": gala_id, "gate": GATES[n % 3], "device_id": f"phone-{n}"}
        for n in range(SCANS)
    ] + [{"code": other["code"], "gala_id": gala_id, "gate": GATES[n % 3]} for n in range(SCANS // 2)]
    bodies = [b for pair in zip(bodies[: SCANS // 2], bodies[SCANS:], strict=True) for b in pair] + bodies[
        SCANS // 2 : SCANS
    ]
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60, headers=door) as c:
        responses = await asyncio.gather(*(c.post("/v1/scans", json=b) for b in bodies))
    assert not [r.text for r in responses if r.status_code >= 500]
    assert all(r.status_code == 200 for r in responses), Counter(f"{r.status_code} {r.text[:80]}" for r in responses)
    for ticket, expected in ((contested, SCANS), (other, SCANS // 2)):
        answers = [r.json() for r in responses if r.json()["ticket"]["id"] == ticket["id"]]
        assert len(answers) == expected
        assert Counter(a["result"] for a in answers) == {"admitted": 1, "already_checked_in": expected - 1}
        winner = next(a for a in answers if a["result"] == "admitted")
        # Every loser names the winner's time and gate.
        assert {(a["first_checked_in_at"], a["first_gate"]) for a in answers} == {
            (winner["first_checked_in_at"], winner["first_gate"])
        }

    engine = sa.create_engine(sync_database_url(database_url))
    try:
        with engine.connect() as conn:
            counted = dict(
                conn.execute(
                    sa.text("SELECT ticket_id, count(*) FROM scan WHERE gala_id = :g AND counted GROUP BY ticket_id"),
                    {"g": gala_id},
                ).all()
            )
            logged = conn.execute(sa.text("SELECT count(*) FROM scan WHERE gala_id = :g"), {"g": gala_id}).scalar()
            events = conn.execute(
                sa.text("SELECT count(*) FROM outbox_event WHERE gala_id = :g AND type = 'ticket.checked_in'"),
                {"g": gala_id},
            ).scalar()
            checked_in = conn.execute(
                sa.text("SELECT count(*) FROM ticket WHERE gala_id = :g AND checked_in_at IS NOT NULL"), {"g": gala_id}
            ).scalar()
    finally:
        engine.dispose()
    assert counted == {contested["id"]: 1, other["id"]: 1}
    assert (logged, events, checked_in) == (SCANS + SCANS // 2, 2, 2)

"""Python calls and CPU per request, in process: the repeatable measure when the machine's speed drifts.

    .venv/bin/python bench/calls.py [--requests 300]

The app runs in this process on a scratch PostgreSQL database, without an HTTP server: each request is
one call of the ASGI app (so neither uvicorn nor a client is counted). For each kind of request it prints
the Python function calls per request, counted by cProfile (within 0.1 % from run to run of the same
code, whatever else the machine is doing), and the CPU per request, the best of 3 runs (which drifts with
the machine, like every timing). Kinds: `/healthz`; an order whose body fails validation (422); an order
refused because its seats are sold (409), with and without an `Idempotency-Key`; one refused because its
general area is sold out; a free order of two places of a general area, and one of two reserved seats,
sold (201, with a key); a door admission. It also counts the statements each request sends to
PostgreSQL, each a round trip (by wrapping the three asyncpg methods that send one).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import json
import pstats
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg.connection
import asyncpg.prepared_stmt
import harness
import httpx
from fastapi import FastAPI
from starlette.types import Message

from tickets.auth import service as auth_service
from tickets.auth.models import Role
from tickets.config import Settings
from tickets.main import create_app, tune_garbage_collector
from tickets.migrate import upgrade_to_head


@contextlib.contextmanager
def round_trips() -> Iterator[list[int]]:
    """Count, while open, every statement asyncpg sends, each a round trip: a query without arguments
    (simple protocol: BEGIN, COMMIT), one with arguments, and a run of a prepared statement (what
    SQLAlchemy's adapter uses). (Wrapped only here: the wrappers' own calls would count in cProfile.)"""
    count = [0]
    conn, prepared = asyncpg.connection.Connection, asyncpg.prepared_stmt.PreparedStatement
    patched = [
        (conn, "execute", lambda *call, **_: len(call) == 2),  # (self, query): no arguments
        (conn, "_do_execute", None),
        (prepared, "_PreparedStatement__do_execute", None),
    ]
    originals = [getattr(owner, name) for owner, name, _ in patched]

    def counted(method: Any, sends: Callable[..., bool] | None) -> Any:
        @functools.wraps(method)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if sends is None or sends(*args, **kwargs):
                count[0] += 1
            return await method(*args, **kwargs)

        return wrapper

    for (owner, name, sends), method in zip(patched, originals, strict=True):
        setattr(owner, name, counted(method, sends))
    try:
        yield count
    finally:
        for (owner, name, _), method in zip(patched, originals, strict=True):
            setattr(owner, name, method)


async def call(app: FastAPI, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> int:
    """One request through the ASGI app; returns its status."""
    payload = b"" if body is None else json.dumps(body).encode()
    raw = [(b"host", b"bench"), (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": raw,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": payload, "more_body": False}
        return {"type": "http.disconnect"}

    status = 0

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def setup(app: FastAPI, n: int) -> dict[str, Any]:
    """A sold-out seat (for refusals) and `n` valid ticket codes of a door gala; the keys."""
    async with app.state.db.sessions() as session:
        _, admin_key = await auth_service.create_api_key(session, name="bench admin", role=Role.admin)
        await session.commit()
    admin = {"Authorization": f"Bearer {admin_key}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench", headers=admin, timeout=60) as c:

        async def post(path: str, body: Any) -> Any:
            r = await c.post(path, json=body)
            assert r.status_code in (200, 201), r.text
            return r.json()

        gala = await post(
            "/v1/galas",
            {"title": "Calls", "venue_name": "Hall", "starts_at": "2031-06-01T19:00:00Z", "timezone": "UTC"},
        )
        gid = gala["id"]
        seats = [{"label": f"A{i}", "row": "A", "number": i} for i in (1, 2)]
        stalls = await post(f"/v1/galas/{gid}/sections", {"name": "Stalls", "kind": "reserved", "seats": seats})
        hall = await post(f"/v1/galas/{gid}/sections", {"name": "Hall", "kind": "general", "capacity": n})
        floor = await post(f"/v1/galas/{gid}/sections", {"name": "Floor", "kind": "general", "capacity": 2 * n})
        gone = await post(f"/v1/galas/{gid}/sections", {"name": "Gone", "kind": "general", "capacity": 1})
        boxes = [{"label": f"B{i}", "row": "B", "number": i} for i in range(2 * n)]
        box = await post(f"/v1/galas/{gid}/sections", {"name": "Boxes", "kind": "reserved", "seats": boxes})
        seat_tt = await post(
            f"/v1/galas/{gid}/ticket-types", {"name": "Stalls", "price_amount": 0, "section_ids": [stalls["id"]]}
        )
        hall_tt = await post(
            f"/v1/galas/{gid}/ticket-types", {"name": "Hall", "price_amount": 0, "section_ids": [hall["id"]]}
        )
        floor_tt = await post(
            f"/v1/galas/{gid}/ticket-types", {"name": "Floor", "price_amount": 0, "section_ids": [floor["id"]]}
        )
        gone_tt = await post(
            f"/v1/galas/{gid}/ticket-types", {"name": "Gone", "price_amount": 0, "section_ids": [gone["id"]]}
        )
        box_tt = await post(
            f"/v1/galas/{gid}/ticket-types", {"name": "Boxes", "price_amount": 0, "section_ids": [box["id"]]}
        )
        await post(f"/v1/galas/{gid}/publish", None)
        seat_map = (await c.get(f"/v1/galas/{gid}/seats")).json()
        seat_ids = {sec["id"]: [s["id"] for s in sec["seats"]] for sec in seat_map["sections"]}
        buyer = {"gala_id": gid, "buyer_email": "bench@example.org", "buyer_name": "Bench"}
        stalls_seats = seat_ids[stalls["id"]]
        taken = {**buyer, "items": [{"ticket_type_id": seat_tt["id"], "seat_id": sid} for sid in stalls_seats]}
        await post("/v1/orders", taken)  # the seats are sold: the same order again is refused
        sold_out = {**buyer, "items": [{"ticket_type_id": gone_tt["id"], "quantity": 1}]}
        await post("/v1/orders", sold_out)  # the area is sold out: the same order again is refused
        codes: list[str] = []
        while len(codes) < n:
            q = min(100, n - len(codes))
            body = {**buyer, "payment_method": "comp", "items": [{"ticket_type_id": hall_tt["id"], "quantity": q}]}
            order = await post("/v1/comp-orders", body)
            tickets = (await c.get(f"/v1/orders/{order['id']}/tickets", params={"limit": 200})).json()["data"]
            codes += [t["code"] for t in tickets]
        door_key = (await post("/v1/api-keys", {"name": "bench door", "role": "door"}))["key"]
    sale = {**buyer, "items": [{"ticket_type_id": floor_tt["id"], "quantity": 2}]}
    pairs = iter(zip(seat_ids[box["id"]][::2], seat_ids[box["id"]][1::2], strict=True))
    seat_sales = (
        {**buyer, "items": [{"ticket_type_id": box_tt["id"], "seat_id": sid} for sid in pair]} for pair in pairs
    )
    door = {"Authorization": f"Bearer {door_key}"}
    return {
        "gala": gid,
        "refused": taken,
        "sold_out": sold_out,
        "sale": sale,
        "seat_sales": seat_sales,
        "codes": codes,
        "door": door,
    }


def measure(name: str, run: Callable[[int], Awaitable[None]], n: int) -> Callable[[], Awaitable[None]]:
    async def go() -> None:
        await run(20)  # warm-up: caches, prepared statements
        profile = cProfile.Profile()
        profile.enable()
        await run(n)
        profile.disable()
        calls = pstats.Stats(profile).total_calls / n  # type: ignore[attr-defined]
        with round_trips() as sent:
            await run(n)
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            await run(n)
            best = min(best, (time.process_time() - start) / n)
        print(f"{name:44s} {calls:7.0f} calls  {sent[0] / n:4.1f} round trips  {best * 1000:6.2f} ms CPU")

    return go


async def main(n: int) -> None:
    with harness.scratch_database("calls") as (url, _), tempfile.TemporaryDirectory(prefix="bench-calls-") as tmp:
        upgrade_to_head(url)
        settings = Settings(
            database_url=url, data_dir=Path(tmp), secret_key=secrets.token_hex(32), rate_limit_scans="0"
        )
        app = create_app(settings, run_jobs=False)
        async with app.router.lifespan_context(app):
            data = await setup(app, 5 * n + 40)
            tune_garbage_collector()  # as in a serving process
            codes = iter(data["codes"])
            invalid = {**data["refused"], "buyer_email": "not-an-address"}

            def repeat(
                method: str, path: str, body: Any, expect: int, headers: Callable[[], dict[str, str]] = dict
            ) -> Callable[[int], Awaitable[None]]:
                async def run(k: int) -> None:
                    for _ in range(k):
                        status = await call(app, method, path, body() if callable(body) else body, headers())
                        assert status == expect, (path, status)

                return run

            def with_key() -> dict[str, str]:
                return {"Idempotency-Key": secrets.token_hex(16)}

            def scan() -> dict[str, Any]:
                return {"code": next(codes), "gala_id": data["gala"], "gate": "A", "scan_id": secrets.token_hex(8)}

            kinds = [
                ("GET /healthz", repeat("GET", "/healthz", None, 200)),
                ("POST /v1/orders, 422", repeat("POST", "/v1/orders", invalid, 422)),
                ("POST /v1/orders, refused", repeat("POST", "/v1/orders", data["refused"], 409)),
                ("POST /v1/orders, refused, with key", repeat("POST", "/v1/orders", data["refused"], 409, with_key)),
                (
                    "POST /v1/orders, area sold out, with key",
                    repeat("POST", "/v1/orders", data["sold_out"], 409, with_key),
                ),
                ("POST /v1/orders, sold (free, 2 places)", repeat("POST", "/v1/orders", data["sale"], 201, with_key)),
                (
                    "POST /v1/orders, sold (free, 2 seats)",
                    repeat("POST", "/v1/orders", lambda: next(data["seat_sales"]), 201, with_key),
                ),
                ("POST /v1/scans, admitted", repeat("POST", "/v1/scans", scan, 200, lambda: data["door"])),
            ]
            print(f"{n} requests of each kind, in process (no HTTP server), PostgreSQL")
            for name, run in kinds:
                await measure(name, run, n)()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    asyncio.run(main(parser.parse_args().requests))

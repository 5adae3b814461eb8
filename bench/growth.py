"""Growth: the same requests against a small database and against a large one, to show that their
latency does not grow with data that is not theirs (indexes, no scans of whole tables).

    .venv/bin/python bench/growth.py [--galas 100] [--places 1000] [--workers 2]

Small: a few galas (a 100-seat and a 5,000-seat reserved gala, a door gala with 1,000 tickets, an
order gala). Large: the same plus `--galas` galas on sale, each with `--places` general places all
sold through comp orders (100 galas x 1,000 = 100,000 more seat rows and 100,000 more tickets).
Measured in each: the seat map of the 100-seat and of the 5,000-seat gala, a door scan, and an order,
each with one connection (latency) and several (throughput). Then EXPLAIN (ANALYZE, BUFFERS) of the
key statements in the large database.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import door
import harness
import psycopg

from tickets.checkin import store


def _named(sql: str) -> str:
    return re.sub(r"\$(\d+)", r"%(s\1)s", sql)


def reserved_gala(api: harness.Api, seats: int, title: str) -> dict[str, Any]:
    gala = api.gala(title)
    gid = gala["id"]
    per_row = 50
    body = [
        {"label": f"R{i // per_row}-{i % per_row + 1}", "row": f"R{i // per_row}", "number": i % per_row + 1}
        for i in range(seats)
    ]
    sec = api.post(f"/v1/galas/{gid}/sections", {"name": "Hall", "kind": "reserved", "seats": body})
    tt = api.post(f"/v1/galas/{gid}/ticket-types", {"name": "Seat", "price_amount": 0, "section_ids": [sec["id"]]})
    api.publish(gid)
    seat_ids = [s["id"] for s in api.get(f"/v1/galas/{gid}/seats")["sections"][0]["seats"]]
    return {"gala": gid, "tt": tt["id"], "seats": seat_ids}


def general_gala(api: harness.Api, places: int, title: str) -> dict[str, Any]:
    gala = api.gala(title)
    gid = gala["id"]
    area = api.post(f"/v1/galas/{gid}/sections", {"name": "Floor", "kind": "general", "capacity": places})
    tt = api.post(f"/v1/galas/{gid}/ticket-types", {"name": "Floor", "price_amount": 0, "section_ids": [area["id"]]})
    api.publish(gid)
    return {"gala": gid, "tt": tt["id"], "section": area["id"]}


def grow(api: harness.Api, server: harness.Server, dbname: str, *, galas: int, places: int) -> float:
    """`galas` galas on sale, every place sold through comp orders of 100 (sent by the cheap client)."""
    started = time.perf_counter()
    requests = []
    for g in range(galas):
        setup = general_gala(api, places, f"Filler gala {g}")
        left = places
        while left:
            q = min(100, left)
            body = {
                "gala_id": setup["gala"],
                "buyer_email": f"filler{g}-{left}@example.org",
                "buyer_name": "Filler",
                "items": [{"ticket_type_id": setup["tt"], "quantity": q}],
                "payment_method": "comp",
            }
            requests.append(
                {
                    "method": "POST",
                    "path": "/v1/comp-orders",
                    "headers": {"Authorization": f"Bearer {api.key}"},
                    "body": body,
                }
            )
            left -= q
    res = harness.run_load(server, dbname, requests, connections=4, keep_bodies=False)
    bad = [s for s in res.statuses if s != 201]
    if bad:
        raise RuntimeError(f"filling failed: {len(bad)} comp orders refused, e.g. {bad[:5]}")
    return time.perf_counter() - started


def measure(
    server: harness.Server, dbname: str, name: str, requests: list[dict[str, Any]], *, connections: int
) -> dict[str, Any]:
    res = harness.run_load(server, dbname, requests, connections=connections)
    wrong = sum(1 for s in res.statuses if s not in (200, 201))
    return {
        "name": name,
        "connections": connections,
        "n": res.count,
        "rate": res.rate,
        "p50": res.p50_ms,
        "p99": res.p99_ms,
        "not_ok": wrong,
        "server_ms": res.per_request_ms()["server"],
        "pg_ms": res.per_request_ms()["postgres"],
    }


def suite(
    server: harness.Server,
    dbname: str,
    fixtures: dict[str, Any],
    phase: str,
) -> list[dict[str, Any]]:
    small, large, scan, sale = fixtures["small"], fixtures["large"], fixtures["scan"], fixtures["sale"]
    out = []
    for label, g, n in (("seat map, 100 seats", small, 400), ("seat map, 5,000 seats", large, 60)):
        req = [{"method": "GET", "path": f"/v1/galas/{g['gala']}/seats"}] * n
        out.append(measure(server, dbname, label, req, connections=1))
        out.append(measure(server, dbname, label, req, connections=8))
    # door scans: fresh tickets in each phase (first admissions), sequential then 16 scanners
    codes = scan["codes_" + phase]
    headers = {"Authorization": f"Bearer {scan['key']}"}

    def scan_req(code: str) -> dict[str, Any]:
        body = {"code": code, "gala_id": scan["gala"], "gate": "North", "scan_id": secrets.token_hex(12)}
        return {"method": "POST", "path": "/v1/scans", "headers": headers, "body": body}

    out.append(measure(server, dbname, "scan", [scan_req(c) for c in codes[:200]], connections=1))
    out.append(measure(server, dbname, "scan", [scan_req(c) for c in codes[200:]], connections=16))

    # orders for one place of the sale gala (plenty left: no refusals)
    def order_req(i: int) -> dict[str, Any]:
        body = {
            "gala_id": sale["gala"],
            "buyer_email": f"grow{phase}{i}@example.org",
            "buyer_name": "Grower",
            "items": [{"ticket_type_id": sale["tt"], "quantity": 1 + i % 2}],
        }
        return {
            "method": "POST",
            "path": "/v1/orders",
            "headers": {"Idempotency-Key": secrets.token_hex(16)},
            "body": body,
        }

    out.append(measure(server, dbname, "order", [order_req(i) for i in range(200)], connections=1))
    out.append(measure(server, dbname, "order", [order_req(1000 + i) for i in range(1000)], connections=64))
    for r in out:
        r["phase"] = phase
    return out


EXPLAINS = {
    "seat map: reserved seats of a gala": (
        'SELECT seat.id, seat.section_id, seat.label, seat.row, seat.number, seat."table", seat.status, seat.blocked, '
        "seat.hold_expires_at FROM seat WHERE seat.gala_id = %(large)s AND seat.label IS NOT NULL "
        "ORDER BY seat.section_id, seat.position"
    ),
    "seat map: free places per area": (
        "SELECT seat.section_id, count(*) FROM seat WHERE seat.gala_id = %(filler)s AND (seat.status = 'available' "
        "OR seat.status = 'held' AND seat.hold_expires_at <= now()) AND seat.blocked IS false GROUP BY seat.section_id"
    ),
    "order: gala, ticket types, sections and the asked-for seats' state": (
        "SELECT gala.id, ticket_type.id, section.id, (SELECT json_agg(json_build_array(seat.id, seat.label, "
        "seat.section_id, (seat.status = 'available' OR seat.status = 'held' AND seat.hold_expires_at <= now()) "
        "AND seat.blocked IS false)) FROM seat WHERE seat.id IN (%(seat1)s, %(seat2)s) AND seat.gala_id = "
        "%(large)s) AS seats_asked FROM gala LEFT OUTER JOIN ticket_type ON ticket_type.gala_id = "
        "gala.id AND ticket_type.id IN (%(sale_tt)s) LEFT OUTER JOIN section ON section.gala_id = gala.id "
        "WHERE gala.id = %(sale)s"
    ),
    "order: hold reserved seats (CTE lock in id order + conditional UPDATE)": (
        "WITH locked AS (SELECT seat.id AS id FROM seat WHERE seat.id IN (%(seat1)s, %(seat2)s) AND seat.gala_id = "
        "%(large)s ORDER BY seat.id FOR UPDATE) UPDATE seat SET status = 'held', order_id = 'ord_explain', "
        "hold_expires_at = now() + interval '10 minutes' FROM locked WHERE seat.id = locked.id AND seat.label IS NOT "
        "NULL AND (seat.status = 'available' OR seat.status = 'held' AND seat.hold_expires_at <= now()) AND "
        "seat.blocked IS false RETURNING seat.id, seat.label, seat.section_id"
    ),
    "order: hold general places (two index range scans, SKIP LOCKED)": (
        "WITH picked AS (SELECT a.id FROM (SELECT seat.id FROM seat WHERE seat.section_id = %(sale_section)s "
        "AND seat.status = 'available' AND seat.blocked IS false ORDER BY seat.id LIMIT 4 FOR UPDATE SKIP LOCKED) "
        "AS a UNION ALL SELECT b.id FROM (SELECT seat.id FROM seat WHERE seat.section_id = %(sale_section)s "
        "AND seat.status = 'held' AND seat.hold_expires_at <= now() AND seat.blocked IS false ORDER BY seat.id "
        "LIMIT 4 FOR UPDATE SKIP LOCKED) AS b LIMIT 4) UPDATE seat SET status = 'held', order_id = 'ord_explain', "
        "hold_expires_at = now() + interval '10 minutes' FROM picked WHERE seat.id = picked.id AND (seat.status = "
        "'available' OR seat.status = 'held' AND seat.hold_expires_at <= now()) AND seat.blocked IS false "
        "RETURNING seat.id"
    ),
    "order: is anything left (sold-out check), in a sold-out gala": (
        "SELECT (EXISTS (SELECT * FROM seat WHERE seat.gala_id = %(filler)s AND seat.status = 'available' AND "
        "seat.blocked IS false)) OR (EXISTS (SELECT * FROM seat WHERE seat.gala_id = %(filler)s AND "
        "seat.status = 'held' AND seat.hold_expires_at <= now() AND seat.blocked IS false))"
    ),
    "order: idempotency claim (unique scope+key)": (
        "INSERT INTO idempotency_record (id, scope, key, request_hash, state, created_at) VALUES ('idem_explain', "
        "'orders:public', 'explain-key', 'x', 'in_flight', now())"
    ),
    "auth: API key by digest": (
        "SELECT api_key.id, api_key.role, api_key.gala_ids, api_key.revoked_at, api_key.expires_at FROM api_key "
        "WHERE api_key.key_hash = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'"
    ),
    # The scan's own statements, as the service runs them ($n parameters named s1, s2, ... here).
    "scan: admit (lock, log, check in, queue the event: one statement)": _named(store._PG_ADMIT),
    "scan: read the ticket and any answer to the scan_id": _named(store._PG_LOOK),
    "scan: a gala's tickets, read once per worker and minute as admission hints": _named(store._PG_GALA_TICKETS),
}


def explain(db_url: str, fixtures: dict[str, Any]) -> str:
    with psycopg.connect(db_url) as conn:
        filler = conn.execute(
            # the largest gala with nothing left (the sale gala of the timed rounds is larger, not sold out)
            "SELECT gala_id FROM seat GROUP BY gala_id HAVING bool_and(status = 'sold') "
            "ORDER BY count(*) DESC, gala_id LIMIT 1"
        ).fetchone()[0]  # type: ignore[index]
        # Any ticket of the large database that is not checked in yet (the door gala's were all scanned).
        ticket, ticket_gala, version, updated_at = conn.execute(
            "SELECT id, gala_id, version, updated_at FROM ticket WHERE checked_in_at IS NULL AND status = 'valid' "
            "ORDER BY id LIMIT 1"
        ).fetchone()  # type: ignore[misc]
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM seat), (SELECT count(*) FROM ticket), (SELECT count(*) FROM gala), "
            '(SELECT count(*) FROM "order"), (SELECT count(*) FROM scan)'
        ).fetchone()
        conn.execute("ANALYZE")
        conn.commit()  # statistics are transactional: the rollbacks below must not undo them
        params = {
            "large": fixtures["large"]["gala"],
            "seat1": fixtures["large"]["seats"][-1],
            "seat2": fixtures["large"]["seats"][-2],
            "filler": filler,
            "sale": fixtures["sale"]["gala"],
            "sale_tt": fixtures["sale"]["tt"],
            "sale_section": fixtures["sale"]["section"],
            "ticket": ticket,
            "scan_gala": fixtures["scan"]["gala"],
            # the scan statements: admission of that ticket, the look-up, the door gala's hints
            "s1": ticket_gala,
            "s2": "explain-scan",
            "s3": ticket,
            "s4": version,
            "s5": updated_at,
            "s6": "North",
            "s7": None,
            "s8": "key_explain",
            "s9": updated_at,
            "s10": "{}",
            "s11": "evt_explain",
            "s12": "{}",
            "s13": "online",
            "s14": updated_at,
        }
        look = {**params, "s1": fixtures["scan"]["gala"], "s2": "no-such-scan"}
        hints = {**params, "s1": fixtures["scan"]["gala"], "s2": 200_000}
        out = [f"rows: seat {counts[0]}, ticket {counts[1]}, gala {counts[2]}, order {counts[3]}, scan {counts[4]}"]  # type: ignore[index]
        for title, sql in EXPLAINS.items():
            args = look if sql == EXPLAINS["scan: read the ticket and any answer to the scan_id"] else params
            args = hints if sql == _named(store._PG_GALA_TICKETS) else args
            plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, args).fetchall()
            conn.rollback()  # the writes are only explained
            out.append(f"\n-- {title}\n" + "\n".join(r[0] for r in plan))
    return "\n".join(out)


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'request':24} {'conns':>5} {'phase':>6} {'n':>5} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'srv ms':>7} {'pg ms':>6} {'not ok':>6}"
    )
    for r in rows:
        print(
            f"{r['name']:24} {r['connections']:>5} {r['phase']:>6} {r['n']:>5} {r['rate']:>7.0f} {r['p50']:>7.1f} "
            f"{r['p99']:>7.1f} {r['server_ms']:>7.2f} {r['pg_ms']:>6.2f} {r['not_ok']:>6}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--galas", type=int, default=100)
    p.add_argument("--places", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    print("machine:", harness.environment())
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-growth-")))
        db_url, dbname = stack.enter_context(harness.scratch_database("growth_"))
        env, server, api = stack.enter_context(harness.deployed(db_url, tmp, workers=args.workers))
        scan_gala, tickets = door.issue_tickets(api, 1000, title="Growth door gala")
        door_key = api.post("/v1/api-keys", {"name": "growth door", "role": "door", "gala_ids": [scan_gala]})["key"]
        codes = [t["code"] for t in tickets]
        fixtures = {
            "small": reserved_gala(api, 100, "Small gala"),
            "large": reserved_gala(api, 5000, "Large gala"),
            "scan": {"gala": scan_gala, "key": door_key, "codes_small": codes[:500], "codes_large": codes[500:]},
            "sale": general_gala(api, 20000, "Growth sale gala"),
        }
        rows = suite(server, dbname, fixtures, "small")
        took = grow(api, server, dbname, galas=args.galas, places=args.places)
        print(f"grew the database by {args.galas} galas x {args.places} sold places in {took:.0f} s")
        rows += suite(server, dbname, fixtures, "large")
        rows.sort(key=lambda r: (r["name"], r["connections"], r["phase"] != "small"))
        print_table(rows)
        print(explain(db_url, fixtures))
        print(f"server error log lines: {len(harness.server_errors(server))}")


if __name__ == "__main__":
    main()

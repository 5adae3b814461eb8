"""Sell-out rush: a 600-seat reserved gala plus 400 general places; 2,000 buyers arrive at once over
64 keep-alive connections, each asking for 1-4 adjacent seats in one row or 1-4 general places.

    .venv/bin/python bench/rush.py [--rounds 3] [--buyers 2000] [--connections 64] [--priced]
                                  [--no-idempotency-key] [--workers 2] [--pool-size N]

Free ticket types (price 0): an order is paid at once and its tickets issued, no Stripe. With
`--priced`, the tickets cost money and the service talks to the local Stripe stand-in
(tests/localstripe_server.py): every accepted order creates a PaymentIntent there and stays
`pending`, its seats held. Each round sells a fresh gala out on the same server; the figures of
each round and their median are printed, then checked in the database and with `tickets check`.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness
import psycopg

ROWS = [chr(ord("A") + i) for i in range(24)]  # 24 rows x 25 seats = 600
PER_ROW = 25
PLACES = 400


def setup_gala(api: harness.Api, *, price: int, title: str = "Sell-out gala") -> dict[str, Any]:
    gala = api.gala(title)
    gid = gala["id"]
    seats = [{"label": f"{r}{n}", "row": r, "number": n} for r in ROWS for n in range(1, PER_ROW + 1)]
    stalls = api.post(f"/v1/galas/{gid}/sections", {"name": "Stalls", "kind": "reserved", "seats": seats})
    floor = api.post(f"/v1/galas/{gid}/sections", {"name": "Floor", "kind": "general", "capacity": PLACES})
    seat_tt = api.post(
        f"/v1/galas/{gid}/ticket-types", {"name": "Stalls", "price_amount": price, "section_ids": [stalls["id"]]}
    )
    floor_tt = api.post(
        f"/v1/galas/{gid}/ticket-types", {"name": "Floor", "price_amount": price, "section_ids": [floor["id"]]}
    )
    api.publish(gid)
    seat_map = api.get(f"/v1/galas/{gid}/seats")
    by_label = {s["label"]: s["id"] for sec in seat_map["sections"] for s in sec["seats"] if s["label"]}
    return {"gala": gid, "seat_tt": seat_tt["id"], "floor_tt": floor_tt["id"], "seats": by_label}


def buyers(setup: dict[str, Any], n: int, rng: random.Random, *, idempotency: bool) -> list[dict[str, Any]]:
    """60 % want 1-4 adjacent seats in a random row, 40 % want 1-4 general places."""
    out = []
    for i in range(n):
        k = rng.randint(1, 4)
        if rng.random() < 0.6:
            row, start = rng.choice(ROWS), rng.randint(1, PER_ROW - k + 1)
            items = [
                {"ticket_type_id": setup["seat_tt"], "seat_id": setup["seats"][f"{row}{start + j}"]} for j in range(k)
            ]
        else:
            items = [{"ticket_type_id": setup["floor_tt"], "quantity": k}]
        headers = {"Idempotency-Key": secrets.token_hex(16)} if idempotency else {}
        body = {"gala_id": setup["gala"], "buyer_email": f"buyer{i}@example.org", "buyer_name": f"Buyer {i}"}
        out.append({"method": "POST", "path": "/v1/orders", "headers": headers, "body": {**body, "items": items}})
    return out


def verify(db_url: str, gala_id: str, won: list[dict[str, Any]], *, priced: bool) -> dict[str, Any]:
    """Count what was sold, in the database, and look for any unit sold or held twice."""
    handed_out = [i["seat_id"] for o in won for i in o["items"]]  # None for general places
    seats_out = [s for s in handed_out if s is not None]
    with psycopg.connect(db_url) as conn:
        per_kind = dict(
            conn.execute(  # type: ignore[arg-type]
                "SELECT sec.kind, count(*) FROM seat s JOIN section sec ON sec.id = s.section_id "
                "WHERE s.gala_id = %s AND s.status = %s GROUP BY sec.kind",
                (gala_id, "held" if priced else "sold"),
            ).fetchall()
        )
        capacity = dict(
            conn.execute(  # type: ignore[arg-type]
                "SELECT sec.kind, count(*) FROM seat s JOIN section sec ON sec.id = s.section_id "
                "WHERE s.gala_id = %s GROUP BY sec.kind",
                (gala_id,),
            ).fetchall()
        )
        double_orders = conn.execute(
            'SELECT count(*) FROM (SELECT i.seat_id FROM order_item i JOIN "order" o ON o.id = i.order_id '
            "WHERE o.gala_id = %s AND (o.status = 'paid' OR (o.status = 'pending' AND o.expires_at > now())) "
            "GROUP BY i.seat_id HAVING count(DISTINCT i.order_id) > 1) d",
            (gala_id,),
        ).fetchone()[0]  # type: ignore[index]
        double_tickets = conn.execute(
            "SELECT count(*) FROM (SELECT seat_id FROM ticket WHERE gala_id = %s AND status = 'valid' "
            "GROUP BY seat_id HAVING count(*) > 1) d",
            (gala_id,),
        ).fetchone()[0]  # type: ignore[index]
        tickets = conn.execute(
            "SELECT count(*) FROM ticket WHERE gala_id = %s AND status = 'valid'", (gala_id,)
        ).fetchone()[0]  # type: ignore[index]
    units = sum(per_kind.values())
    oversold = (
        double_orders
        + double_tickets
        + (len(seats_out) - len(set(seats_out)))
        + sum(max(0, per_kind.get(k, 0) - capacity[k]) for k in capacity)
        + (0 if priced else abs(tickets - units))
        + abs(len(handed_out) - units)
    )
    return {
        "reserved_sold": per_kind.get("reserved", 0),
        "general_sold": per_kind.get("general", 0),
        "units": units,
        "tickets": tickets,
        "oversold": oversold,
    }


def one_round(
    api: harness.Api,
    server: harness.Server,
    dbname: str,
    db_url: str,
    *,
    buyers_n: int,
    connections: int,
    price: int,
    idempotency: bool,
    seed: int,
    extra_pids: dict[str, int] | None = None,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    setup = setup_gala(api, price=price)
    requests = buyers(setup, buyers_n, random.Random(seed), idempotency=idempotency)
    res = harness.run_load(
        server, dbname, requests, connections=connections, extra_pids=extra_pids, profile_dir=profile_dir
    )
    bodies = res.json_bodies()
    outcome = Counter(
        "201" if s == 201 else f"{s} {b.get('code', '')}".strip() for s, b in zip(res.statuses, bodies, strict=True)
    )
    won = [b for s, b in zip(res.statuses, bodies, strict=True) if s == 201]
    sold = verify(db_url, setup["gala"], won, priced=price > 0)
    accepted = outcome["201"]
    return {
        "result": res,
        "requests": res.count,
        "wall": res.wall,
        "rate": res.rate,
        "accepted_rate": accepted / res.wall,
        "refused_rate": (res.count - accepted) / res.wall,
        "accepted": accepted,
        "outcome": dict(outcome),
        "p50": res.p50_ms,
        "p99": res.p99_ms,
        "p99_accepted": res.pct(99, {201}) * 1000,
        "5xx": res.errors_5xx,
        **sold,
    }


def print_round(i: int, r: dict[str, Any]) -> None:
    res: harness.LoadResult = r["result"]
    print(
        f"  round {i}: {r['requests']} requests in {r['wall']:.2f} s = {r['rate']:.0f}/s "
        f"(accepted {r['accepted_rate']:.0f}/s, refused {r['refused_rate']:.0f}/s); "
        f"p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms (accepted p99 {r['p99_accepted']:.1f} ms); "
        f"5xx {r['5xx']}"
    )
    print(f"           outcomes {r['outcome']}")
    print(
        f"           sold: {r['reserved_sold']}/600 seats + {r['general_sold']}/{PLACES} places = {r['units']} "
        f"(tickets {r['tickets']}); oversold {r['oversold']}"
    )
    print(f"           by quarter, in the order sent: {phases(res)}")
    pr = res.per_request_ms()
    print(
        f"           {res.cpu_line()}; per request: server {pr['server']:.2f} ms, "
        f"postgres {pr['postgres']:.2f} ms, client {pr['client']:.2f} ms"
    )


def phases(res: harness.LoadResult) -> str:
    """Latency over the run: each quarter of the requests, in the order they were sent, with the share
    of them that was accepted (a sale costs more than a refusal, and sales come first)."""
    n = res.count
    parts = []
    for q in range(4):
        lo, hi = q * n // 4, (q + 1) * n // 4
        lat = sorted(res.latencies[lo:hi])
        accepted = sum(1 for s in res.statuses[lo:hi] if s == 201) / max(1, hi - lo)
        p50, p99 = (lat[min(len(lat) - 1, int(f * len(lat)))] * 1000 for f in (0.5, 0.99))
        parts.append(f"{accepted:.0%} sold, p50 {p50:.0f} p99 {p99:.0f} ms")
    return "; ".join(parts)


def summarise(rounds: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("rate", "accepted_rate", "refused_rate", "p50", "p99", "units", "oversold", "5xx")
    out = {k: harness.median([float(r[k]) for r in rounds]) for k in keys}
    out["oversold_total"] = sum(r["oversold"] for r in rounds)
    out["5xx_total"] = sum(r["5xx"] for r in rounds)
    for attr in ("cpu_server", "cpu_pg_db", "cpu_pg_shared", "cpu_client"):
        out[attr] = harness.median([getattr(r["result"], attr) / r["requests"] * 1000 for r in rounds])
    return out


@contextlib.contextmanager
def stripe_stand_in() -> Iterator[tuple[str, int]]:
    port = harness.free_port()
    proc = subprocess.Popen(
        [sys.executable, str(harness.ROOT / "tests" / "localstripe_server.py"), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/js.stripe.com/v3/", timeout=1).status_code < 500:
                    break
            time.sleep(0.1)
        yield base, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def warm_up(
    api: harness.Api,
    server: harness.Server,
    dbname: str,
    db_url: str,
    *,
    price: int,
    extra_pids: dict[str, int] | None = None,
) -> None:
    """An unmeasured rush of 400 buyers on a gala of its own: every worker opens its pooled database
    connections and prepares its statements before the clock runs."""
    one_round(
        api,
        server,
        dbname,
        db_url,
        buyers_n=400,
        connections=64,
        price=price,
        idempotency=True,
        seed=-1,
        extra_pids=extra_pids,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--buyers", type=int, default=2000)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--pool-size", type=int, default=None, help="DB_POOL_SIZE per worker (default: the service's)")
    p.add_argument("--priced", action="store_true", help="priced tickets, paid through the local Stripe stand-in")
    p.add_argument("--no-idempotency-key", action="store_true")
    p.add_argument("--profile", type=Path, help="sample the workers with py-spy into this folder (slows them)")
    args = p.parse_args()
    print("machine:", harness.environment())
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-rush-")))
        db_url, dbname = stack.enter_context(harness.scratch_database("rush_"))
        extra: dict[str, str] = {}
        extra_pids: dict[str, int] = {}
        if args.pool_size:
            extra["DB_POOL_SIZE"] = str(args.pool_size)
        if args.priced:
            base, pid = stack.enter_context(stripe_stand_in())
            extra.update(STRIPE_SECRET_KEY="sk_test_bench", STRIPE_WEBHOOK_SECRET="whsec_bench", STRIPE_API_BASE=base)
            extra_pids["stripe stand-in"] = pid
        env, server, api = stack.enter_context(harness.deployed(db_url, tmp, workers=args.workers, **extra))
        print(
            f"sell-out rush: {args.buyers} buyers, {args.connections} connections, {args.workers} workers, "
            f"{'priced (Stripe stand-in)' if args.priced else 'free'}, "
            f"Idempotency-Key {'off' if args.no_idempotency_key else 'on'}"
        )
        warm_up(api, server, dbname, db_url, price=2500 if args.priced else 0, extra_pids=extra_pids)
        rounds = []
        for i in range(args.rounds):
            r = one_round(
                api,
                server,
                dbname,
                db_url,
                buyers_n=args.buyers,
                connections=args.connections,
                price=2500 if args.priced else 0,
                idempotency=not args.no_idempotency_key,
                seed=1000 + i,
                extra_pids=extra_pids,
                profile_dir=args.profile / f"round-{i + 1}" if args.profile else None,
            )
            print_round(i + 1, r)
            if args.profile:
                print(harness.summarise_profiles(args.profile / f"round-{i + 1}"))
            rounds.append(r)
        s = summarise(rounds)
        code, text = harness.tickets_check(env)
        errors = harness.server_errors(server)
        print(
            f"median: {s['rate']:.0f} req/s (accepted {s['accepted_rate']:.0f}/s, refused {s['refused_rate']:.0f}/s), "
            f"p50 {s['p50']:.1f} ms, p99 {s['p99']:.1f} ms; oversold {s['oversold_total']}, 5xx {s['5xx_total']}; "
            f"`tickets check`: exit {code} ({text.splitlines()[-1] if text else ''}); server error log lines: "
            f"{len(errors)}"
        )


if __name__ == "__main__":
    main()

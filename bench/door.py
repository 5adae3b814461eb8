"""Door rush: 1,000 valid tickets scanned from 16 concurrent scanners, plus 10 % repeats (a ticket
shown again, later) and 5 % forged codes (a valid code with one character of its signature changed).

    .venv/bin/python bench/door.py [--rounds 3] [--tickets 1000] [--connections 16] [--workers 2]

Each round issues 1,000 tickets of a fresh gala through box-office comp orders, reads their codes
through `GET /v1/orders/{id}/tickets`, makes a door key limited to the gala (`POST /v1/api-keys`) and
sends every scan as `POST /v1/scans` with its own `scan_id`. Printed: scans/s, p50/p99, that each
ticket was admitted exactly once, that every repeat and forgery was refused, and CPU per process.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import secrets
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import harness
import psycopg

B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def issue_tickets(api: harness.Api, n: int, *, title: str = "Door gala") -> tuple[str, list[dict[str, Any]]]:
    """A gala with `n` general places, all sold through comp orders of 100; returns (gala id, tickets)."""
    gala = api.gala(title)
    gid = gala["id"]
    area = api.post(f"/v1/galas/{gid}/sections", {"name": "Hall", "kind": "general", "capacity": n})
    tier = api.post(f"/v1/galas/{gid}/ticket-types", {"name": "Guest", "price_amount": 0, "section_ids": [area["id"]]})
    api.publish(gid)
    tickets: list[dict[str, Any]] = []
    left = n
    while left:
        q = min(100, left)
        order = api.post(
            "/v1/comp-orders",
            {
                "gala_id": gid,
                "buyer_email": f"host{left}@example.org",
                "buyer_name": "Host",
                "items": [{"ticket_type_id": tier["id"], "quantity": q}],
                "payment_method": "comp",
            },
        )
        tickets += api.get(f"/v1/orders/{order['id']}/tickets")["data"]
        left -= q
    return gid, tickets


def forge(code: str, rng: random.Random) -> str:
    """Change one character inside the signature (not the last, which carries padding bits)."""
    i = rng.randrange(80, len(code) - 2)
    return code[:i] + rng.choice([c for c in B32 if c != code[i]]) + code[i + 1 :]


def scans(
    gala_id: str, tickets: list[dict[str, Any]], rng: random.Random, *, scanners: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """The scan requests in door order, and what each one is: `first`, `repeat` or `forged`."""
    n = len(tickets)
    order = list(range(n))
    rng.shuffle(order)
    keyed: list[tuple[float, str, str]] = [(float(pos), "first", tickets[t]["code"]) for pos, t in enumerate(order)]
    position = {t: pos for pos, t in enumerate(order)}
    for t in rng.sample(range(n), n // 10):  # shown again, after the first scan
        keyed.append((rng.uniform(position[t] + 1, n), "repeat", tickets[t]["code"]))
    for t in rng.sample(range(n), n // 20):
        keyed.append((rng.uniform(0, n), "forged", forge(tickets[t]["code"], rng)))
    keyed.sort()
    requests, kinds = [], []
    for i, (_, kind, code) in enumerate(keyed):
        body = {
            "code": code,
            "gala_id": gala_id,
            "gate": ("North", "South")[i % 2],
            "device_id": f"scanner-{i % scanners}",
            "scan_id": secrets.token_hex(12),
        }
        requests.append({"method": "POST", "path": "/v1/scans", "headers": {}, "body": body})
        kinds.append(kind)
    return requests, kinds


def one_round(
    api: harness.Api,
    server: harness.Server,
    dbname: str,
    db_url: str,
    *,
    n: int,
    connections: int,
    seed: int,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    gid, tickets = issue_tickets(api, n)
    door_key = api.post("/v1/api-keys", {"name": "door bench", "role": "door", "gala_ids": [gid]})["key"]
    requests, kinds = scans(gid, tickets, random.Random(seed), scanners=connections)
    for r in requests:
        r["headers"]["Authorization"] = f"Bearer {door_key}"
    res = harness.run_load(server, dbname, requests, connections=connections, profile_dir=profile_dir)
    bodies = res.json_bodies()
    results = Counter((k, b.get("result", str(s))) for k, s, b in zip(kinds, res.statuses, bodies, strict=True))
    admitted_per_ticket: Counter[str] = Counter(
        b["ticket"]["id"] for b in bodies if b.get("result") == "admitted" and b.get("ticket")
    )
    forged_refused = sum(v for (k, r), v in results.items() if k == "forged" and r == "invalid")
    refused_valid = sum(v for (k, r), v in results.items() if k != "forged" and r != "admitted")
    with psycopg.connect(db_url) as conn:
        checked_in = conn.execute(
            "SELECT count(*) FROM ticket WHERE gala_id = %s AND checked_in_at IS NOT NULL", (gid,)
        ).fetchone()[0]  # type: ignore[index]
        counted = conn.execute("SELECT count(*) FROM scan WHERE gala_id = %s AND counted", (gid,)).fetchone()[0]  # type: ignore[index]
        logged = conn.execute("SELECT count(*) FROM scan WHERE gala_id = %s", (gid,)).fetchone()[0]  # type: ignore[index]
    return {
        "result": res,
        "scans": res.count,
        "rate": res.rate,
        "p50": res.p50_ms,
        "p99": res.p99_ms,
        "5xx": res.errors_5xx,
        "non_200": sum(1 for s in res.statuses if s != 200),
        "outcomes": {f"{k}:{r}": v for (k, r), v in sorted(results.items())},
        "admitted": sum(admitted_per_ticket.values()),
        "admitted_twice": sum(1 for v in admitted_per_ticket.values() if v > 1),
        "tickets": n,
        "repeats": kinds.count("repeat"),
        "repeats_refused": refused_valid,
        "forged": kinds.count("forged"),
        "forged_refused": forged_refused,
        "db_checked_in": checked_in,
        "db_counted": counted,
        "db_logged": logged,
    }


def print_round(i: int, r: dict[str, Any]) -> None:
    res: harness.LoadResult = r["result"]
    ok = (
        r["admitted"] == r["tickets"] == r["db_checked_in"] == r["db_counted"]
        and r["admitted_twice"] == 0
        and r["repeats_refused"] == r["repeats"]
        and r["forged_refused"] == r["forged"]
        and r["db_logged"] == r["scans"]
    )
    print(
        f"  round {i}: {r['scans']} scans in {res.wall:.2f} s = {r['rate']:.0f}/s; p50 {r['p50']:.1f} ms, "
        f"p99 {r['p99']:.1f} ms; non-200 {r['non_200']}, 5xx {r['5xx']}"
    )
    print(
        f"           admitted {r['admitted']}/{r['tickets']} (twice: {r['admitted_twice']}; in the database "
        f"{r['db_checked_in']} checked in, {r['db_counted']} counted, {r['db_logged']} scans logged); "
        f"repeats refused {r['repeats_refused']}/{r['repeats']}, forgeries refused "
        f"{r['forged_refused']}/{r['forged']} -> {'OK' if ok else 'WRONG'}"
    )
    print(f"           outcomes {r['outcomes']}")
    pr = res.per_request_ms()
    print(
        f"           {res.cpu_line()}; per scan: server {pr['server']:.2f} ms, postgres {pr['postgres']:.2f} ms, "
        f"client {pr['client']:.2f} ms"
    )


def warm_up(api: harness.Api, server: harness.Server, dbname: str, db_url: str, *, connections: int) -> None:
    """An unmeasured round of 300 tickets on a gala of its own: every worker opens its pooled database
    connections and prepares its statements before the clock runs (a served door is warm)."""
    one_round(api, server, dbname, db_url, n=300, connections=connections, seed=-1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tickets", type=int, default=1000)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--pool-size", type=int, default=None)
    p.add_argument("--profile", type=Path, help="sample the workers with py-spy into this folder (slows them)")
    args = p.parse_args()
    print("machine:", harness.environment())
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-door-")))
        db_url, dbname = stack.enter_context(harness.scratch_database("door_"))
        extra = {"DB_POOL_SIZE": str(args.pool_size)} if args.pool_size else {}
        env, server, api = stack.enter_context(harness.deployed(db_url, tmp, workers=args.workers, **extra))
        print(f"door rush: {args.tickets} tickets + 10 % repeats + 5 % forged, {args.connections} scanners")
        warm_up(api, server, dbname, db_url, connections=args.connections)
        rounds = []
        for i in range(args.rounds):
            prof = args.profile / f"round-{i + 1}" if args.profile else None
            r = one_round(
                api, server, dbname, db_url, n=args.tickets, connections=args.connections, seed=i, profile_dir=prof
            )
            print_round(i + 1, r)
            if prof:
                print(harness.summarise_profiles(prof))
            rounds.append(r)
        print(
            f"median: {harness.median([r['rate'] for r in rounds]):.0f} scans/s, "
            f"p50 {harness.median([r['p50'] for r in rounds]):.1f} ms, "
            f"p99 {harness.median([r['p99'] for r in rounds]):.1f} ms; server error log lines: "
            f"{len(harness.server_errors(server))}"
        )


if __name__ == "__main__":
    main()

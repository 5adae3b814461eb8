"""Everything in one run: the pgbench baseline, the sell-out rush (free tickets, and priced through
the local Stripe stand-in), and the door rush, on one scratch database and one server, with the
targets checked at the end.

    .venv/bin/python bench/run_all.py [--rounds 3] [--no-priced] [--workers 2] [--wait-quiet 120]

Prints every round, then a summary table: rates, latency, correctness, CPU per request by process,
and our rates as a fraction of pgbench's. See docs/BENCHMARKS.md for the method.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path
from typing import Any

import door
import harness
import pgbench_baseline
import psycopg
import rush

TARGETS = {
    "rush_rate": 400.0,
    "rush_p99": 250.0,
    "door_rate": 1000.0,
    "door_p99": 100.0,
    "rush_fraction": 0.06,
    "door_fraction": 0.15,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--pool-size", type=int, default=None)
    p.add_argument("--pgbench-seconds", type=int, default=15)
    p.add_argument("--no-priced", action="store_true", help="skip the rush with priced tickets (Stripe stand-in)")
    p.add_argument("--wait-quiet", type=float, default=0, help="wait up to this many seconds for an idle machine")
    args = p.parse_args()
    env_info = harness.environment()
    print("machine:", env_info)
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-all-")))
        db_url, dbname = stack.enter_context(harness.scratch_database("all_"))

        harness.wait_quiet(args.wait_quiet)
        pg = pgbench_baseline.run(db_url, dbname, clients=8, seconds=args.pgbench_seconds)
        print(pg["command"])
        print(pgbench_baseline.describe(pg))
        results["pgbench"] = pg
        # pgbench leaves a lot of dirty pages and WAL behind: write them out now, so that the checkpoint
        # they would cause does not land in the middle of a measured round (commits wait on its I/O).
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")

        extra: dict[str, str] = {}
        extra_pids: dict[str, int] = {}
        if args.pool_size:
            extra["DB_POOL_SIZE"] = str(args.pool_size)
        if not args.no_priced:
            base, pid = stack.enter_context(rush.stripe_stand_in())
            extra.update(STRIPE_SECRET_KEY="sk_test_bench", STRIPE_WEBHOOK_SECRET="whsec_bench", STRIPE_API_BASE=base)
            extra_pids["stripe stand-in"] = pid
        env, server, api = stack.enter_context(harness.deployed(db_url, tmp, workers=args.workers, **extra))

        for priced in (False, True) if not args.no_priced else (False,):
            label = "rush (priced, Stripe stand-in)" if priced else "rush (free)"
            print(f"\n{label}: 2000 buyers, 64 connections, {args.workers} workers, Idempotency-Key on")
            rush.warm_up(api, server, dbname, db_url, price=2500 if priced else 0, extra_pids=extra_pids or None)
            rounds = []
            for i in range(args.rounds):
                harness.wait_quiet(args.wait_quiet)
                r = rush.one_round(
                    api,
                    server,
                    dbname,
                    db_url,
                    buyers_n=2000,
                    connections=64,
                    price=2500 if priced else 0,
                    idempotency=True,
                    seed=1000 + i,
                    extra_pids=extra_pids if priced else None,
                )
                rush.print_round(i + 1, r)
                rounds.append(r)
            results[label] = rounds

        print(f"\ndoor rush: 1000 tickets + 10 % repeats + 5 % forged, 16 scanners, {args.workers} workers")
        door.warm_up(api, server, dbname, db_url, connections=16)
        rounds = []
        for i in range(args.rounds):
            harness.wait_quiet(args.wait_quiet)
            r = door.one_round(api, server, dbname, db_url, n=1000, connections=16, seed=i)
            door.print_round(i + 1, r)
            rounds.append(r)
        results["door"] = rounds
        check_code, check_text = harness.tickets_check(env)
        errors = harness.server_errors(server)
    summary(results, env_info, check_code, check_text, len(errors))


def summary(
    results: dict[str, Any], env_info: dict[str, str], check_code: int, check_text: str, error_lines: int
) -> None:
    pg = results["pgbench"]
    tps = pg["tps"]
    print("\n== summary (median of rounds) ==")
    print(f"pgbench (8 clients, UPDATE + INSERT per transaction): {tps:.0f} transactions/s")
    header = (
        f"{'scenario':32} {'req/s':>7} {'accepted/s':>10} {'refused/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'5xx':>4} {'of pgbench':>10} {'srv ms/req':>10} {'pg ms/req':>9} {'client':>7}"
    )
    print(header)
    ok = True
    for label in ("rush (free)", "rush (priced, Stripe stand-in)"):
        rounds = results.get(label)
        if not rounds:
            continue
        s = rush.summarise(rounds)
        print(
            f"{label:32} {s['rate']:>7.0f} {s['accepted_rate']:>10.0f} {s['refused_rate']:>9.0f} {s['p50']:>7.1f} "
            f"{s['p99']:>7.1f} {s['5xx_total']:>4.0f} {s['rate'] / tps:>10.1%} {s['cpu_server']:>10.2f} "
            f"{s['cpu_pg_db'] + s['cpu_pg_shared']:>9.2f} {s['cpu_client']:>7.2f}"
        )
        print(f"{'':32} sold per round: {[r['units'] for r in rounds]} of 1000, oversold {s['oversold_total']:.0f}")
        ok &= s["oversold_total"] == 0 and s["5xx_total"] == 0
    d = results["door"]
    rate = harness.median([r["rate"] for r in d])
    p50 = harness.median([r["p50"] for r in d])
    p99 = harness.median([r["p99"] for r in d])
    cpu = {k: harness.median([r["result"].per_request_ms()[k] for r in d]) for k in ("server", "postgres", "client")}
    print(
        f"{'door rush':32} {rate:>7.0f} {'':>10} {'':>9} {p50:>7.1f} {p99:>7.1f} "
        f"{sum(r['5xx'] for r in d):>4} {rate / tps:>10.1%} {cpu['server']:>10.2f} {cpu['postgres']:>9.2f} "
        f"{cpu['client']:>7.2f}"
    )
    door_ok = all(
        r["admitted"] == r["tickets"]
        and r["admitted_twice"] == 0
        and r["repeats_refused"] == r["repeats"]
        and r["forged_refused"] == r["forged"]
        for r in d
    )
    print(f"{'':32} every ticket admitted once, every repeat and forgery refused: {door_ok}")
    ok &= door_ok
    print(
        f"`tickets check`: exit {check_code} ({check_text.splitlines()[-1] if check_text else ''}); "
        f"server error log lines: {error_lines}"
    )
    ok &= check_code == 0 and error_lines == 0
    free = rush.summarise(results["rush (free)"])
    checks = [
        ("rush >= 400 req/s", free["rate"] >= TARGETS["rush_rate"]),
        ("rush p99 <= 250 ms", free["p99"] <= TARGETS["rush_p99"]),
        ("door >= 1000 scans/s", rate >= TARGETS["door_rate"]),
        ("door p99 <= 100 ms", p99 <= TARGETS["door_p99"]),
        ("rush >= 6 % of pgbench", free["rate"] / tps >= TARGETS["rush_fraction"]),
        ("door >= 15 % of pgbench", rate / tps >= TARGETS["door_fraction"]),
        ("correct (0 oversold, 0 5xx, check OK)", ok),
    ]
    print("targets: " + "; ".join(f"{name}: {'met' if met else 'NOT met'}" for name, met in checks))
    print(f"machine load average at start: {env_info['loadavg']}")


if __name__ == "__main__":
    main()

"""The database's own limit for the raw work of a sale: pgbench running, in one transaction, one
conditional UPDATE of a seat row (the availability rule in the WHERE clause, as our holds do) and
one INSERT, with 8 clients, on the same PostgreSQL database the service uses.

    .venv/bin/python bench/pgbench_baseline.py [--clients 8] [--seconds 15]

The tables `bench_seat` (10,000 rows shaped like `seat`) and `bench_hold` live in that database next
to the service's own. Every transaction really writes: the hold it sets expires at once, so the next
UPDATE of the same seat finds it free again.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import psycopg

SEATS = 10_000

SCRIPT = """\\set sid random(1, {seats})
BEGIN;
UPDATE bench_seat SET status = 'held', order_id = 'ord_' || :client_id, hold_expires_at = now()
  WHERE id = 'seat_' || lpad(:sid::text, 15, '0')
    AND (status = 'available' OR (status = 'held' AND hold_expires_at <= now()));
INSERT INTO bench_hold (id, order_id, seat_id, created_at)
  VALUES (md5(random()::text), 'ord_' || :client_id, 'seat_' || lpad(:sid::text, 15, '0'), now());
END;
"""


def pgbench_binary() -> str:
    found = shutil.which("pgbench")
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True):
        return str(candidate)
    raise SystemExit("pgbench not found: apt-get install -y postgresql-client (or postgresql-contrib)")


def prepare(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_seat (id varchar(32) PRIMARY KEY, gala_id varchar(32) NOT NULL, "
            "status varchar(16) NOT NULL, order_id varchar(32), hold_expires_at timestamptz, blocked boolean "
            "NOT NULL DEFAULT false)"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_hold (id varchar(32) PRIMARY KEY, order_id varchar(32) NOT NULL, "
            "seat_id varchar(32) NOT NULL, created_at timestamptz NOT NULL)"
        )
        conn.execute("TRUNCATE bench_seat, bench_hold")
        conn.execute(
            "INSERT INTO bench_seat (id, gala_id, status) SELECT 'seat_' || lpad(g::text, 15, '0'), 'gal_bench', "
            f"'available' FROM generate_series(1, {SEATS}) g"
        )
        conn.execute("VACUUM ANALYZE bench_seat")


def run(db_url: str, dbname: str, *, clients: int = 8, seconds: int = 15) -> dict[str, Any]:
    prepare(db_url)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as fh:
        fh.write(SCRIPT.format(seats=SEATS))
        script = fh.name
    host, port = "127.0.0.1", "5432"
    user = "postgres"
    m = re.match(r"postgresql://(?:(?P<user>[^@:/]+)@)?(?P<host>[^:/]+)(?::(?P<port>\d+))?/", db_url)
    if m:
        user, host, port = m.group("user") or user, m.group("host"), m.group("port") or port
    cmd = [
        pgbench_binary(),
        "-h",
        host,
        "-p",
        port,
        "-U",
        user,
        "-n",
        "-M",
        "prepared",
        "-c",
        str(clients),
        "-j",
        str(min(clients, 2)),
        "-T",
        str(seconds),
        "-f",
        script,
        dbname,
    ]
    # CPU is sampled in a window inside the run: pgbench's backends exit with it, and the CPU of an
    # exited backend is no longer attributable to this database.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.5)
    before, client_before, started = (
        harness.snapshot(None, dbname),
        harness.cpu_seconds([proc.pid]),
        time.perf_counter(),
    )
    time.sleep(seconds - 3)
    after, client_after, wall = (
        harness.snapshot(None, dbname),
        harness.cpu_seconds([proc.pid]),
        time.perf_counter() - started,
    )
    out, _ = proc.communicate(timeout=seconds + 120)
    Path(script).unlink()
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = float(re.search(r"latency average = ([\d.]+) ms", out).group(1))  # type: ignore[union-attr]
    txns = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))  # type: ignore[union-attr]
    failed = re.search(r"number of failed transactions: (\d+)", out)
    return {
        "tps": tps,
        "latency_ms": lat,
        "transactions": txns,
        "failed": int(failed.group(1)) if failed else 0,
        "wall": wall,
        "cpu_pg_db": after.postgres_db - before.postgres_db,
        "cpu_pg_shared": after.postgres_shared - before.postgres_shared,
        "cpu_client": client_after - client_before,
        "cpu_machine": after.machine - before.machine,
        "command": " ".join(cmd[:-2] + ["<script>", dbname]),
        "output": out,
    }


def describe(r: dict[str, Any]) -> str:
    per = 1000 * (r["cpu_pg_db"] + r["cpu_pg_shared"]) / (r["tps"] * r["wall"])
    return (
        f"pgbench: {r['tps']:.0f} transactions/s (latency avg {r['latency_ms']:.2f} ms, {r['transactions']} done, "
        f"{r['failed']} failed); CPU s: postgres {r['cpu_pg_db']:.2f} (+{r['cpu_pg_shared']:.2f} shared), "
        f"pgbench {r['cpu_client']:.2f}; machine {r['cpu_machine']:.2f} of {2 * r['wall']:.2f} (a {r['wall']:.1f} s "
        "window inside the run); "
        f"postgres per transaction {per:.3f} ms"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=int, default=15)
    args = p.parse_args()
    print("machine:", harness.environment())
    with contextlib.ExitStack() as stack:
        db_url, dbname = stack.enter_context(harness.scratch_database("pgb_"))
        r = run(db_url, dbname, clients=args.clients, seconds=args.seconds)
        print(r["command"])
        print(describe(r))


if __name__ == "__main__":
    main()

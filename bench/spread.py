"""How a burst of new connections spreads over the workers: one listening socket per worker
(`SO_REUSEPORT`, the default) against uvicorn's one shared socket (`LISTEN_PER_WORKER=false`).

    .venv/bin/python bench/spread.py [--trials 20] [--workers 2]

For each way, `tickets serve --workers N` (SQLite: no request is sent, only connections are opened)
takes `--trials` bursts of 64 and of 16 connections opened one after the other from this process,
idle workers each time, as when a sale opens or the door's scanners start. After each burst it counts
the connections that each worker holds and prints, per way and burst size, the largest share of one
worker in every trial (sorted), its median, and how often one worker took them all.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
from pathlib import Path

import harness


def bursts(per_worker: bool, sizes: list[int], trials: int, workers: int) -> dict[int, list[int]]:
    with tempfile.TemporaryDirectory(prefix="bench-spread-") as tmp:
        env = harness.server_env(
            f"sqlite:///{tmp}/spread.db", Path(tmp), LISTEN_PER_WORKER="true" if per_worker else "false"
        )
        with harness.serve(env, workers=workers) as server:
            deadline = time.monotonic() + 30  # every worker up and listening before the first burst
            while per_worker and len(harness.tcp_sockets(server.port, "0A")) < workers and time.monotonic() < deadline:
                time.sleep(0.1)
            largest: dict[int, list[int]] = {n: [] for n in sizes}
            for n in sizes:
                for _ in range(trials):
                    conns = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(n)]
                    deadline = time.monotonic() + 5
                    while sum(split := harness.connections_per_worker(server)) < n and time.monotonic() < deadline:
                        time.sleep(0.02)
                    largest[n].append(max(split))
                    for c in conns:
                        c.close()
                    time.sleep(0.3)  # the workers close their ends and are idle again
            return largest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(f"machine: {harness.environment()}")
    sizes = [64, 16]
    for per_worker in (True, False):
        way = "a socket per worker (SO_REUSEPORT)" if per_worker else "one shared socket"
        for n, shares in bursts(per_worker, sizes, args.trials, args.workers).items():
            print(
                f"{way:36s} {n:3d} connections: largest share per trial {sorted(shares)}; "
                f"median {statistics.median(shares):g} (even: {n / args.workers:g}); "
                f"all on one worker in {sum(s == n for s in shares)} of {len(shares)}"
            )


if __name__ == "__main__":
    main()

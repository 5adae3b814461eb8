"""A cheap HTTP/1.1 load generator: keep-alive connections on asyncio streams, nothing else.

An httpx client spends about ten times more CPU per request than the server under test can afford to
lose on a 2-core machine, so the benchmarks drive the service with this instead. It runs in its own
process (so its CPU is measured apart from the server's) and is deliberately dumb: every request is
encoded to bytes before the clock starts, each connection sends one request, reads one response
(Content-Length or chunked) and takes the next request from the shared list, until none are left.

    python bench/httpload.py JOB.json OUT.json

JOB.json: {"host", "port", "connections", "requests": [{"method", "path", "headers"?, "body"?}],
           "keep_bodies": bool, "wait_for_go": bool}
OUT.json: {"wall", "cpu", "results": [[status, latency_s, body_or_null], ...]} in request order.

With `wait_for_go`, the client connects first, prints READY and waits for a line on standard input
before it sends anything: the caller snapshots CPU counters in between, and all connections start
at once ("2,000 buyers arriving at once").
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

try:  # the same event loop the server uses; the plain asyncio loop also works
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


def encode(host: str, port: int, req: dict[str, Any]) -> bytes:
    body = req.get("body")
    payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    lines = [f"{req.get('method', 'GET')} {req['path']} HTTP/1.1", f"Host: {host}:{port}"]
    for name, value in (req.get("headers") or {}).items():
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append("Content-Type: application/json")
    if body is not None or req.get("method", "GET") in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body and whether the server will close the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = -1
    chunked = close = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            close = True
    if chunked:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    elif length >= 0:
        body = await reader.readexactly(length)
    else:
        body = await reader.read()
        close = True
    return status, body, close


async def run(job: dict[str, Any]) -> dict[str, Any]:
    host, port = job["host"], int(job["port"])
    wire = [encode(host, port, r) for r in job["requests"]]
    keep = bool(job.get("keep_bodies"))
    results: list[Any] = [None] * len(wire)
    next_index = 0
    conns = [await asyncio.open_connection(host, port) for _ in range(int(job["connections"]))]
    if job.get("wait_for_go"):
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    async def worker(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        nonlocal next_index
        reader, writer = conn
        while next_index < len(wire):
            i = next_index
            next_index += 1
            started = time.perf_counter()
            try:
                writer.write(wire[i])
                status, body, close = await read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                results[i] = [0, time.perf_counter() - started, f"connection error: {exc!r}"]
                close = True
            else:
                results[i] = [status, time.perf_counter() - started, body.decode() if keep else None]
            if close:
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
        writer.close()

    cpu0, wall0 = os.times(), time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    wall, cpu1 = time.perf_counter() - wall0, os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {"wall": wall, "cpu": cpu, "results": results}


def main() -> None:
    with open(sys.argv[1]) as fh:
        job = json.load(fh)
    if uvloop is not None:
        out = uvloop.run(run(job))
    else:
        out = asyncio.run(run(job))
    with open(sys.argv[2], "w") as fh:
        json.dump(out, fh)
    sys.stdout.write("DONE\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

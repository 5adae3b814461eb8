"""Test support: databases per run, a live server in subprocesses, the Stripe stand-in."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, *, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


@contextmanager
def scratch_database(server_url: str | None, tmp_dir: Path) -> Iterator[str]:
    """A new empty database: a SQLite file, or a fresh PostgreSQL database dropped afterwards."""
    if not server_url or server_url.startswith("sqlite"):
        path = tmp_dir / f"tickets-{secrets.token_hex(4)}.db"
        yield f"sqlite:///{path}"
        return
    base, _, _ = server_url.rpartition("/")
    name = f"tickets_test_{secrets.token_hex(5)}"
    admin = _psycopg_url(f"{base}/postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _psycopg_url(url: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgresql+psycopg://"):
        if url.startswith(prefix):
            return "postgresql://" + url.removeprefix(prefix)
    return url


@contextmanager
def live_server(env: dict[str, str], *, workers: int = 2, cwd: Path | None = None) -> Iterator[str]:
    """`tickets serve --workers N` in a subprocess; yields its base URL."""
    port = free_port()
    full_env = {**os.environ, **env}
    # The log goes to a file, never to a pipe nobody reads (a full pipe would stall the server).
    log = tempfile.NamedTemporaryFile(prefix="tickets-server-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "tickets.cli", "serve", "--port", str(port), "--workers", str(workers)],
        env=full_env,
        cwd=str(cwd) if cwd else None,
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/readyz", proc=proc, timeout=60)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        errors = [
            line for line in Path(log.name).read_text(errors="replace").splitlines() if '"level": "error"' in line
        ]
        if errors:
            sys.stderr.write(f"server log {log.name} has {len(errors)} error lines; first: {errors[0][:2000]}\n")


@contextmanager
def stripe_stand_in() -> Iterator[str]:
    """localstripe on a free loopback port (see tests/localstripe_server.py)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "localstripe_server.py"), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/js.stripe.com/v3/", proc=proc)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)

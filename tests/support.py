"""Test support: databases per run, the app in process, a live server in subprocesses, the Stripe stand-in."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import psycopg
from fastapi import FastAPI

from tickets.config import Settings
from tickets.main import create_app

ROOT = Path(__file__).resolve().parent.parent


async def start_of_a_rate_window(seconds: int = 3600, needed: float = 30) -> None:
    """Rate limits count in fixed windows (whole hours for an hourly limit): wait for the next window when
    fewer than `needed` seconds are left in this one, so that a test's requests all fall into one."""
    left = seconds - time.time() % seconds
    if left < needed:
        await asyncio.sleep(left + 0.5)


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app in this process with its lifespan started (database, caches), background jobs off."""
    application = create_app(settings, run_jobs=False)
    async with application.router.lifespan_context(application):
        yield application


@asynccontextmanager
async def asgi_client(app: FastAPI, base_url: str = "http://testserver") -> AsyncIterator[httpx.AsyncClient]:
    """A client that calls `app` in process; an unexpected exception is the app's 500 answer."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        yield client


@asynccontextmanager
async def app_client(settings: Settings, base_url: str = "http://testserver") -> AsyncIterator[httpx.AsyncClient]:
    """`running_app` and `asgi_client` together, for a test that needs the app with other settings."""
    async with running_app(settings) as app, asgi_client(app, base_url) as client:
        yield client


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
    admin = psycopg_url(f"{base}/postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def psycopg_url(url: str) -> str:
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

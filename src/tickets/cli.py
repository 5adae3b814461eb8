"""The `tickets` command: migrate, serve, create-api-key, check."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Sequence
from typing import Any, cast

from tickets.config import get_settings
from tickets.listen import PerWorkerSocket, reuse_port_available
from tickets.logs import configure_logging

log = logging.getLogger("tickets.cli")


def _migrate(_args: argparse.Namespace) -> int:
    from tickets.migrate import upgrade_to_head

    upgrade_to_head(get_settings().database_url)
    log.info("database migrated to head")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from tickets.migrate import upgrade_to_head

    settings = get_settings()
    upgrade_to_head(settings.database_url)  # once, before any worker starts
    settings.resolved_secret_key()  # make the secret before workers race to create it
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Let every worker's request metrics be summed at /metrics.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="tickets-metrics-")
    log.info("serving on http://%s:%d with %d worker(s)", args.host, args.port, args.workers)
    options: dict[str, Any] = {
        "factory": True,
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
        "access_log": settings.access_log,
        "log_config": None,
        "proxy_headers": True,
        "forwarded_allow_ips": args.forwarded_allow_ips,
        "timeout_graceful_shutdown": 10,
        "timeout_keep_alive": settings.keep_alive_seconds,
    }
    if args.workers > 1 and settings.listen_per_worker and reuse_port_available():
        # Each worker listens on a socket of its own (tickets/listen.py); otherwise uvicorn.run's own.
        from uvicorn.supervisors import Multiprocess

        config = uvicorn.Config("tickets.main:app_factory", **options)
        listener = PerWorkerSocket(args.host, args.port)
        try:
            listener.check()
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", args.host, args.port, exc)
            return 1
        Multiprocess(config, sockets=[cast(socket.socket, listener)]).run()
        return 0
    uvicorn.run("tickets.main:app_factory", **options)
    return 0


def _create_api_key(args: argparse.Namespace) -> int:
    from tickets.auth import service as auth_service
    from tickets.auth.models import Role
    from tickets.db import Database
    from tickets.migrate import upgrade_to_head

    settings = get_settings()
    upgrade_to_head(settings.database_url)

    async def run() -> str:
        db = Database.from_settings(settings)
        try:
            async with db.sessions() as session:
                key, plain = await auth_service.create_api_key(
                    session, name=args.name, role=Role(args.role), gala_ids=args.gala or None
                )
                await session.commit()
                log.info("created API key %s (%s, role %s)", key.id, key.name, key.role)
                return plain
        finally:
            await db.engine.dispose()

    plain = asyncio.run(run())
    print(plain)  # alone on the last line of standard output
    return 0


def _check(_args: argparse.Namespace) -> int:
    from tickets.checks import find_violations

    violations = find_violations(get_settings().database_url)
    for violation in violations:
        print(violation)
    if violations:
        print(f"{len(violations)} violation(s)", file=sys.stderr)
        return 1
    print("inventory OK")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tickets", description="Event ticketing and gala registration API.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("migrate", help="bring the database to the latest schema")
    p.set_defaults(func=_migrate)

    p = sub.add_parser("serve", help="migrate, then serve the API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--forwarded-allow-ips", default="127.0.0.1", help="proxies trusted for X-Forwarded-*")
    p.set_defaults(func=_serve)

    p = sub.add_parser("create-api-key", help="create an API key; prints it alone on the last line")
    p.add_argument("--role", required=True, choices=["admin", "box_office", "door"])
    p.add_argument("--name", required=True)
    p.add_argument("--gala", action="append", metavar="GALA_ID", help="limit the key to this gala (repeatable)")
    p.set_defaults(func=_create_api_key)

    p = sub.add_parser("check", help="verify inventory invariants; exits 1 on any violation")
    p.set_defaults(func=_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(get_settings().log_level)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())

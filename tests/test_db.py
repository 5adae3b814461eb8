"""Statements run on the driver itself (`tickets.db._driver_call`): the SQL and arguments must be what
SQLAlchemy itself would send, including after the SQL of a set of `IN` list lengths has been kept."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.base import Executable

import tickets.models  # noqa: F401  (every table, for the statements below)
from tickets import idempotency
from tickets.db import _driver_call, _for_driver
from tickets.orders import service

DIALECT = postgresql.asyncpg.dialect()  # type: ignore[attr-defined]


def _as_sqlalchemy_sends(statement: Executable, params: dict[str, Any], keys: tuple[str, ...] | None) -> Any:
    prepared = _for_driver(statement, DIALECT, keys)
    state = prepared.compiled.construct_expanded_state(params)
    processors = {**prepared.binds, **state.processors}
    args = [
        processors[name](value) if name in processors else value
        for name, value in zip(state.positiontup or (), state.positional_parameters, strict=True)
    ]
    return state.statement, args


def test_driver_calls_send_what_sqlalchemy_would_for_any_list_lengths() -> None:
    rng = random.Random(20261203)
    now = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)

    def ids(prefix: str, n: int) -> list[str]:
        return [f"{prefix}_{rng.randrange(10**6):06d}" for _ in range(n)]

    kept = 0
    for _ in range(60):  # lengths repeat, so most calls use SQL kept from an earlier one, with other values
        at = now + timedelta(seconds=rng.randrange(1000))
        gala = ids("gal", 1)[0]
        cases: list[tuple[Executable, dict[str, Any], tuple[str, ...] | None]] = [
            (
                service._PLAN_AND_SEATS,
                {
                    "gala_id": gala,
                    "tt_ids": ids("tt", rng.randrange(1, 4)),
                    "ids": ids("st", rng.randrange(5)),
                    "now": at,
                },
                None,
            ),
            (
                service._PLAN_AND_PLACES,
                {"gala_id": gala, "tt_ids": ids("tt", rng.randrange(4)), "places_cap": rng.randrange(1, 5), "now": at},
                None,
            ),
            (service._FREE_PLACES, {"sections": ids("sec", rng.randrange(1, 3)), "count": 3, "now": at}, None),
        ]
        claim = {
            "id": ids("idem", 1)[0],
            "scope": "orders",
            "key": ids("k", 1)[0],
            "request_hash": "h",
            "state": "done",
            "status_code": 409,
            "response_body": '{"status": 409}',
            "created_at": at,
        }
        cases.append((idempotency._CLAIM, claim, tuple(sorted(claim))))
        for statement, params, keys in cases:
            prepared = _for_driver(statement, DIALECT, keys)
            kept += len(prepared.layouts) > 0
            sql, args, _ = _driver_call(statement, DIALECT, params)
            assert (sql, args) == _as_sqlalchemy_sends(statement, params, keys), statement
    # The plan's statements name literal values of their own (seat statuses): those are kept too.
    assert _for_driver(service._PLAN_AND_SEATS, DIALECT, None).layouts
    assert kept > 200

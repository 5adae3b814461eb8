"""The OpenAPI document is complete; limits, CORS and logs behave as operators need."""

from __future__ import annotations

import logging
import os
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import make_settings
from tests.factories import add_general, add_ticket_type, create_gala, order_body, publish
from tests.support import app_client, start_of_a_rate_window
from tickets.config import Settings

BODY_EXAMPLES = [
    ("post", "/v1/galas"),
    ("post", "/v1/orders"),
    ("post", "/v1/galas/{gala_id}/ticket-types"),
    ("post", "/v1/webhook-endpoints"),
    ("post", "/v1/orders/{order_id}/refunds"),
]


def test_every_operation_is_documented(app: FastAPI) -> None:
    schema: dict[str, Any] = app.openapi()
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    problems = []
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            name = f"{method.upper()} {path}"
            if not op.get("summary"):
                problems.append(f"{name}: no summary")
            if not op.get("description"):
                problems.append(f"{name}: no description")
            codes = set(op["responses"])
            if not any(c.startswith("2") for c in codes):
                problems.append(f"{name}: no success response")
            if path.startswith("/v1/") and path != "/v1/payments/stripe/webhook" and "401" not in codes:
                problems.append(f"{name}: 401 not documented")
            for code, response in op["responses"].items():
                if code.startswith(("4", "5")):
                    content = response.get("content", {})
                    if "application/problem+json" not in content:
                        problems.append(f"{name}: {code} is not a problem+json response")
                    if "`" not in response.get("description", ""):
                        problems.append(f"{name}: {code} does not name its problem codes")
    for method, path in BODY_EXAMPLES:
        body = schema["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
        ref = body.get("$ref", "").rsplit("/", 1)[-1]
        if ref and "examples" not in schema["components"]["schemas"][ref]:
            problems.append(f"{method.upper()} {path}: no example body")
    assert not problems, "\n".join(problems)


@pytest.fixture
async def limited(settings: Settings) -> Any:
    s = make_settings(
        settings.database_url,
        settings.data_dir,
        rate_limit_orders="3/hour",
        cors_origins="https://tickets.example.org",
    )
    async with app_client(s, "http://limited") as c:
        yield c


async def test_order_rate_limit_and_cors(limited: httpx.AsyncClient, admin: dict[str, str]) -> None:
    gala = await create_gala(limited, admin)
    floor = await add_general(limited, admin, gala["id"], 50)
    tier = await add_ticket_type(limited, admin, gala["id"], [floor["id"]], price_amount=0)
    await publish(limited, admin, gala["id"])
    body = order_body(gala["id"], [{"ticket_type_id": tier["id"], "quantity": 1}])
    await start_of_a_rate_window()
    codes = [(await limited.post("/v1/orders", json=body)).status_code for _ in range(3)]
    assert codes == [201, 201, 201]
    r = await limited.post("/v1/orders", json=body)
    assert r.status_code == 429 and r.json()["code"] == "rate_limited" and int(r.headers["retry-after"]) >= 1

    r = await limited.options(
        "/v1/orders",
        headers={
            "Origin": "https://tickets.example.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,idempotency-key",
        },
    )
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://tickets.example.org"
    r = await limited.get("/v1/galas", headers={"Origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in r.headers


REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


async def test_order_rate_limit_is_shared_through_redis(settings: Settings, admin: dict[str, str]) -> None:
    """Two app instances (two workers, or two hosts) with one Redis: the limit holds across both."""
    import redis.asyncio as redis

    store = redis.from_url(REDIS_URL)
    await store.flushdb()  # this database (15, or 14 in the PostgreSQL run) belongs to the tests
    await store.aclose()
    s = make_settings(
        settings.database_url, settings.data_dir, rate_limit_orders="4/hour", rate_limit_storage_url=REDIS_URL
    )
    async with app_client(s) as one, app_client(s) as two:
        gala = await create_gala(one, admin)
        floor = await add_general(one, admin, gala["id"], 50)
        tier = await add_ticket_type(one, admin, gala["id"], [floor["id"]], price_amount=0)
        await publish(one, admin, gala["id"])
        body = order_body(gala["id"], [{"ticket_type_id": tier["id"], "quantity": 1}])
        await start_of_a_rate_window()
        codes = [(await c.post("/v1/orders", json=body)).status_code for c in (one, two, one, two)]
        assert codes == [201, 201, 201, 201]
        for c in (one, two):  # each instance alone has seen only two: the shared count refuses both
            r = await c.post("/v1/orders", json=body)
            assert r.status_code == 429 and r.json()["code"] == "rate_limited", r.text


async def test_logs_carry_no_personal_data_or_secrets(
    client: httpx.AsyncClient, admin: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    gala = await create_gala(client, admin)
    floor = await add_general(client, admin, gala["id"], 5)
    tier = await add_ticket_type(client, admin, gala["id"], [floor["id"]], price_amount=0)
    await publish(client, admin, gala["id"])
    email = "private.person@example.org"
    r = await client.post(
        "/v1/orders",
        json={**order_body(gala["id"], [{"ticket_type_id": tier["id"], "quantity": 1}]), "buyer_email": email},
    )
    token = r.json()["access_token"]
    await client.get(f"/v1/orders/{r.json()['id']}", headers={"X-Order-Token": token})
    await client.get("/v1/orders", headers={"Authorization": "Bearer tk_wrong-key-value"})
    text = "\n".join(f"{rec.getMessage()} {rec.__dict__}" for rec in caplog.records)
    for secret in (email, token, admin["Authorization"].split()[1], "tk_wrong-key-value"):
        assert secret not in text

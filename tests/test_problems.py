from __future__ import annotations

from collections.abc import AsyncIterator

import httpx


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = dict(r.json())
    assert body["code"] == code and body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    assert "Traceback" not in r.text
    return body


async def test_unknown_route(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/nowhere"), 404, "not_found")


async def test_wrong_method(client: httpx.AsyncClient) -> None:
    assert_problem(await client.put("/v1/galas"), 405, "method_not_allowed")


async def test_malformed_json(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    r = await client.post("/v1/galas", content=b'{"title": ', headers={**admin, "content-type": "application/json"})
    assert_problem(r, 400, "malformed_body")


async def test_oversized_body(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    r = await client.post(
        "/v1/galas", content=b"[" + b"1," * 600_000 + b"1]", headers={**admin, "content-type": "application/json"}
    )
    assert_problem(r, 413, "payload_too_large")


async def test_oversized_body_without_length(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"["
        for _ in range(20):
            yield b"1," * 50_000
        yield b"1]"

    r = await client.post("/v1/galas", content=chunks(), headers={**admin, "content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert_problem(r, 413, "payload_too_large")


async def test_nul_in_text_is_refused_with_its_place(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    """JSON may carry U+0000, but no text column of PostgreSQL can store it: a 422 naming the field, on
    both engines alike, and nothing written."""
    body = {"title": "Spring\u0000Gala", "venue": {"name": "Hall", "tags": ["ok", "b\u0000d"]}}
    r = await client.post("/v1/galas", json=body, headers=admin)
    problem = assert_problem(r, 422, "validation_error")
    assert problem["errors"] == [
        {"loc": ["body", "title"], "msg": "NUL character in text"},
        {"loc": ["body", "venue", "tags", 1], "msg": "NUL character in text"},
    ]
    listed = (await client.get("/v1/galas", headers=admin, params={"limit": 100})).json()["data"]
    assert not any("\x00" in g["title"] for g in listed)


async def test_nul_in_query_is_a_4xx(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    r = await client.get("/v1/orders", params={"email": "a\x00b@example.org"}, headers=admin)
    assert r.status_code in (200, 422), r.text  # SQLite stores and finds nothing; PostgreSQL refuses the text
    if r.status_code == 422:
        assert_problem(r, 422, "validation_error")
    else:
        assert r.json()["data"] == []


async def test_validation_error_lists_errors(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.post("/v1/orders", json={"items": []}), 422, "validation_error")
    errors = body["errors"]
    assert isinstance(errors, list) and errors
    assert all({"loc", "msg"} <= set(e) for e in errors)


async def test_request_id_and_security_headers(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.json() == {"status": "ok"}
    assert r.headers["x-request-id"] == "abc-123"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert (await client.get("/readyz")).json() == {"status": "ready"}


async def test_metrics_in_prometheus_format(client: httpx.AsyncClient) -> None:
    await client.get("/v1/galas")
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'tickets_http_requests_total{method="GET",route="/v1/galas",status="200"}' in text
    assert "tickets_http_request_duration_seconds_bucket" in text
    assert "# TYPE tickets_orders gauge" in text and "tickets_holds_active " in text

"""The fast path of the scan and order routes (tickets.fastpath) answers as FastAPI's own handler does.

A request with `Content-Type: application/vnd.api+json` is JSON to FastAPI but not to the fast path, so
it takes FastAPI's handler: the same request sent both ways must get the same answer."""

from __future__ import annotations

from typing import Any

import httpx

from tests.factories import order_body
from tests.test_checkin import buy, door_gala

FAST = {"content-type": "application/json"}
STANDARD = {"content-type": "application/vnd.api+json"}


async def both(client: httpx.AsyncClient, path: str, body: Any, headers: dict[str, str]) -> list[httpx.Response]:
    payload = body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).content
    return [await client.post(path, content=payload, headers={**headers, **kind}) for kind in (FAST, STANDARD)]


def same(responses: list[httpx.Response]) -> httpx.Response:
    fast, standard = responses
    assert fast.status_code == standard.status_code, (fast.text, standard.text)
    assert fast.headers["content-type"] == standard.headers["content-type"]
    assert fast.json() == standard.json()
    return fast


async def test_scans_answer_the_same_on_both_paths(
    client: httpx.AsyncClient, admin: dict[str, str], door: dict[str, str]
) -> None:
    g = await door_gala(client, admin)
    gala_id = g["gala"]["id"]
    code = (await buy(client, g, "A1"))["tickets"][0]["code"]
    first = await client.post("/v1/scans", json={"code": code, "gala_id": gala_id, "scan_id": "fp-1"}, headers=door)
    assert first.status_code == 200 and first.json()["result"] == "admitted"
    cases: list[tuple[Any, dict[str, str], int]] = [
        ({"code": code, "gala_id": gala_id, "scan_id": "fp-1"}, door, 200),  # the first answer, replayed
        ({"code": "not-a-code", "gala_id": gala_id, "scan_id": "fp-2"}, door, 200),  # invalid, logged once
        ({"gala_id": gala_id}, door, 422),  # no code
        ({"code": code, "gala_id": gala_id, "extra": 1}, door, 422),
        (b'{"code": ', door, 400),  # not JSON
        ({"code": code, "gala_id": "gal_" + "N" * 20}, door, 404),
        ({"code": code, "gala_id": gala_id}, {}, 401),
        ({"code": code, "gala_id": gala_id}, {"Authorization": "Bearer tk_wrong"}, 401),
        ({"gala_id": gala_id}, {"Authorization": "Bearer tk_wrong"}, 401),  # the key is checked first
    ]
    for body, headers, status in cases:
        answer = same(await both(client, "/v1/scans", body, headers))
        assert answer.status_code == status, (body, answer.text)
    assert (await client.post("/v1/scans", json={"code": code}, headers={**door, **FAST})).status_code == 422


async def test_orders_answer_the_same_on_both_paths(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    g = await door_gala(client, admin)
    gala_id = g["gala"]["id"]
    await buy(client, g, "A1")
    taken = order_body(gala_id, [{"ticket_type_id": g["vip"]["id"], "seat_id": g["seats"]["A1"]}])
    cases: list[tuple[Any, dict[str, str], int, str | None]] = [
        (taken, {}, 409, "seat_unavailable"),
        (taken, {"Idempotency-Key": "k" * 256}, 422, "validation_error"),  # longer than 255
        (taken, {"Idempotency-Key": "tab\there"}, 422, "validation_error"),
        ({**taken, "buyer_email": "not-an-address"}, {}, 422, "validation_error"),
        ({**taken, "items": []}, {}, 422, "validation_error"),
        (b"[1, 2", {}, 400, "malformed_body"),
        ({**taken, "gala_id": "gal_" + "N" * 20}, {}, 404, "gala_not_found"),
        (taken, {"Authorization": "Bearer tk_wrong"}, 401, "invalid_api_key"),
    ]
    for body, headers, status, code in cases:
        answer = same(await both(client, "/v1/orders", body, headers))
        assert (answer.status_code, answer.json().get("code")) == (status, code), (body, answer.text)
    # A refusal stored under a key is replayed on either path.
    key = {"Idempotency-Key": f"fp-{gala_id}"}
    fast, standard = await both(client, "/v1/orders", taken, key)
    assert fast.status_code == standard.status_code == 409 and fast.json() == standard.json()
    assert standard.headers.get("idempotent-replayed") == "true"
    # Sales on both paths.
    sales = [
        order_body(gala_id, [{"ticket_type_id": g["vip"]["id"], "seat_id": g["seats"][label]}])
        for label in ("A2", "A3")
    ]
    for body, kind in zip(sales, (FAST, STANDARD), strict=True):
        r = await client.post("/v1/orders", content=httpx.Request("POST", "/", json=body).content, headers=kind)
        assert r.status_code == 201 and r.json()["status"] == "paid", r.text

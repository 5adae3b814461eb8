from __future__ import annotations

import httpx

from tests.factories import add_reserved, add_ticket_type, create_gala, future, publish, theatre_seats


async def test_create_read_update_publish_close(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    gala = await create_gala(client, admin, currency="cad", max_tickets_per_order=8)
    assert gala["status"] == "draft"
    assert gala["currency"] == "CAD"
    assert gala["id"].startswith("gal_")

    # The public cannot see a draft.
    assert (await client.get(f"/v1/galas/{gala['id']}")).status_code == 404

    r = await client.patch(f"/v1/galas/{gala['id']}", json={"title": "Heritage Gala 2027"}, headers=admin)
    assert r.status_code == 200 and r.json()["title"] == "Heritage Gala 2027"

    r = await client.post(f"/v1/galas/{gala['id']}/publish", headers=admin)
    assert r.status_code == 409 and r.json()["code"] == "gala_not_ready"

    section = await add_reserved(client, admin, gala["id"], theatre_seats("A", 3))
    await add_ticket_type(client, admin, gala["id"], [section["id"]])
    await publish(client, admin, gala["id"])

    public = await client.get(f"/v1/galas/{gala['id']}")
    assert public.status_code == 200 and public.json()["status"] == "on_sale"

    r = await client.post(f"/v1/galas/{gala['id']}/close", headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "closed"
    r = await client.post(f"/v1/galas/{gala['id']}/close", headers=admin)
    assert r.status_code == 200  # closing twice is harmless


async def test_public_list_shows_published_only(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    draft = await create_gala(client, admin, title="Draft")
    live = await create_gala(client, admin, title="Live")
    section = await add_reserved(client, admin, live["id"], theatre_seats("A", 1))
    await add_ticket_type(client, admin, live["id"], [section["id"]])
    await publish(client, admin, live["id"])

    seen: set[str] = set()
    cursor = None
    while True:
        params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/galas", params=params)).json()
        seen |= {g["id"] for g in page["data"]}
        assert all(g["status"] != "draft" for g in page["data"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert live["id"] in seen and draft["id"] not in seen

    staff = (await client.get("/v1/galas", params={"status": "draft", "limit": 200}, headers=admin)).json()
    assert all(g["status"] == "draft" for g in staff["data"])


async def test_pagination_walks_every_gala_once(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    made = {(await create_gala(client, admin, title=f"Page {i}"))["id"] for i in range(5)}
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 2, "status": "draft"}
        if cursor:
            params["cursor"] = cursor
        r = await client.get("/v1/galas", params=params, headers=admin)
        assert r.status_code == 200
        page = r.json()
        assert len(page["data"]) <= 2
        seen.extend(g["id"] for g in page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert made <= set(seen)
    assert len(seen) == len(set(seen))


async def test_validation_problems(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    base = {"title": "X", "venue_name": "Hall", "starts_at": future(10), "timezone": "America/Toronto"}
    cases = [
        ({**base, "starts_at": "2027-01-01T19:00:00"}, "starts_at"),  # naive datetime
        ({**base, "ends_at": future(5)}, "body"),  # ends before it starts
        ({**base, "timezone": "Mars/Olympus"}, "timezone"),
        ({**base, "currency": "XYZ"}, "currency"),
        ({**base, "title": ""}, "title"),
        ({**base, "surprise": 1}, "surprise"),
    ]
    for body, field in cases:
        r = await client.post("/v1/galas", json=body, headers=admin)
        assert r.status_code == 422, (body, r.text)
        problem = r.json()
        assert r.headers["content-type"] == "application/problem+json"
        assert problem["code"] == "validation_error"
        assert any(field in map(str, e["loc"]) for e in problem["errors"]), (field, problem)


async def test_patch_rejects_end_before_start(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    gala = await create_gala(client, admin)
    r = await client.patch(f"/v1/galas/{gala['id']}", json={"ends_at": future(1)}, headers=admin)
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    r = await client.patch(f"/v1/galas/{gala['id']}", json={"title": None}, headers=admin)
    assert r.status_code == 422


async def test_unknown_gala_is_404(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    r = await client.get("/v1/galas/gal_doesnotexist00000000", headers=admin)
    assert r.status_code == 404 and r.json()["code"] == "gala_not_found"
    r = await client.get("/v1/galas/not-an-id")
    assert r.status_code == 422

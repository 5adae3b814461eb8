"""Fixtures for the door page in a real browser: the real server (one worker) on a database of its own,
Debian's Chromium driven by Playwright, and a free gala with tickets made through the API.

Chromium comes from Debian (`apt-get install chromium`, done by scripts/test.sh); Playwright never
downloads a browser here. Without Chromium these tests fail: they are never skipped.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, Playwright, async_playwright, expect

from tests.conftest import TEST_SECRET
from tests.support import live_server, scratch_database
from tickets.migrate import upgrade_to_head

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
expect.set_options(timeout=15_000)


def chromium_path() -> str:
    """Debian's Chromium; a missing browser is a failure, never a skip."""
    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(
            "Chromium is not installed: `apt-get install -y chromium chromium-driver` (scripts/test.sh does it)",
            pytrace=False,
        )
    return path


@dataclass
class Server:
    base: str
    admin: dict[str, str]

    def client(self, headers: dict[str, str] | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers=headers or {}, timeout=30)


@dataclass
class Gala:
    id: str
    door_key: str
    tickets: list[dict[str, Any]] = field(default_factory=list)

    @property
    def door(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.door_key}"}


@pytest.fixture(scope="session")
def door_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # A database of its own: this server lives for the whole session and its background jobs (webhook
    # delivery, sweeps) must not work on the suite's shared database while other tests drive those jobs.
    data_dir = tmp_path_factory.mktemp("door")
    with scratch_database(os.environ.get("TEST_DATABASE_URL"), data_dir) as database_url:
        upgrade_to_head(database_url)
        env = {"DATABASE_URL": database_url, "SECRET_KEY": TEST_SECRET, "DATA_DIR": str(data_dir)}
        out = subprocess.run(
            [sys.executable, "-m", "tickets.cli", "create-api-key", "--role", "admin", "--name", "door tests"],
            capture_output=True,
            text=True,
            check=True,
            cwd=data_dir,
            env={**os.environ, **env},
        )
        admin = {"Authorization": f"Bearer {out.stdout.strip().splitlines()[-1]}"}
        with live_server(env, workers=1, cwd=data_dir) as base:
            yield Server(base, admin)


def make_gala(server: Server, *, guests: list[str], title: str = "Door Gala") -> Gala:
    """A published free gala (its orders are paid at once), one ticket per guest in row A, and a door key
    limited to it, all through the API."""
    with server.client(server.admin) as c:
        r = c.post(
            "/v1/galas",
            json={
                "title": f"{title} {secrets.token_hex(3)}",
                "venue_name": "Meridian Arts Centre",
                "starts_at": "2031-06-01T23:00:00Z",
                "timezone": "America/Toronto",
            },
        )
        assert r.status_code == 201, r.text
        gala_id = r.json()["id"]
        seats = [{"label": f"A{n}", "row": "A", "number": n} for n in range(1, len(guests) + 1)]
        r = c.post(f"/v1/galas/{gala_id}/sections", json={"name": "Orchestra", "kind": "reserved", "seats": seats})
        assert r.status_code == 201, r.text
        section_id = r.json()["id"]
        r = c.post(
            f"/v1/galas/{gala_id}/ticket-types",
            json={"name": "Patron", "price_amount": 0, "section_ids": [section_id]},
        )
        assert r.status_code == 201, r.text
        tier_id = r.json()["id"]
        assert c.post(f"/v1/galas/{gala_id}/publish").status_code == 200
        seat_map = c.get(f"/v1/galas/{gala_id}/seats").json()
        seat_ids = {s["label"]: s["id"] for sec in seat_map["sections"] for s in sec["seats"]}
        tickets = []
        for n, guest in enumerate(guests, start=1):
            r = c.post(
                "/v1/orders",
                json={
                    "gala_id": gala_id,
                    "buyer_email": f"guest{n}@example.org",
                    "buyer_name": guest,
                    "items": [{"ticket_type_id": tier_id, "seat_id": seat_ids[f"A{n}"], "attendee_name": guest}],
                },
            )
            assert r.status_code == 201, r.text
            order = r.json()
            assert order["status"] == "paid", order
            r = c.get(f"/v1/orders/{order['id']}/tickets", headers={"X-Order-Token": order["access_token"]})
            assert r.status_code == 200, r.text
            tickets.extend(r.json()["data"])
        r = c.post("/v1/api-keys", json={"name": "door volunteer", "role": "door", "gala_ids": [gala_id]})
        assert r.status_code == 201, r.text
        return Gala(gala_id, r.json()["key"], tickets)


# The async API, on the suite's one event loop: the sync API would hold a loop of its own open in this
# thread and break the async tests that run after these.
@pytest.fixture(scope="session")
async def playwright() -> AsyncIterator[Playwright]:
    async with async_playwright() as p:
        yield p


@pytest.fixture(scope="session")
async def browser(playwright: Playwright) -> AsyncIterator[Browser]:
    b = await playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
    yield b
    await b.close()


@pytest.fixture
async def context(browser: Browser, door_server: Server) -> AsyncIterator[BrowserContext]:
    # A phone-sized screen with touch, as at the door.
    ctx = await browser.new_context(
        base_url=door_server.base, viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True
    )
    yield ctx
    await ctx.close()


async def sign_in(page: Page, gala: Gala, gate: str = "North") -> None:
    """Open /door, sign in with the door key, choose the gala and the gate, and wait for the offline list."""
    await page.goto("/door")
    await page.get_by_label("Door key", exact=True).fill(gala.door_key)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_label("Gala", exact=True).select_option(gala.id)
    await page.get_by_label("Gate", exact=True).fill(gate)
    await page.get_by_role("button", name="Start scanning").click()
    await expect(page.locator("#sync-status")).to_have_attribute("data-tickets", str(len(gala.tickets)))


async def wedge_scan(page: Page, code: str) -> None:
    """What a handheld scanner does: type the code into the focused field, then Enter."""
    await page.get_by_label("Ticket code").focus()
    await page.keyboard.type(code, delay=0)
    await page.keyboard.press("Enter")


def qr_video(text: str, path: Path, *, size: int = 480, frames: int = 10) -> Path:
    """A short Y4M video of a QR code holding `text`, for Chromium's fake camera
    (`--use-file-for-fake-video-capture`): grey luma, neutral chroma, 4:2:0."""
    import qrcode
    from PIL import Image

    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=4, box_size=1)
    qr.add_data(text)
    qr.make(fit=True)
    matrix = qr.make_image(fill_color="black", back_color="white").convert("L")
    scale = (size - 40) // matrix.size[0]
    code = matrix.resize((matrix.size[0] * scale, matrix.size[1] * scale), Image.Resampling.NEAREST)
    frame = Image.new("L", (size, size), 255)
    frame.paste(code, ((size - code.size[0]) // 2, (size - code.size[1]) // 2))
    luma = frame.tobytes()
    chroma = bytes([128]) * ((size // 2) * (size // 2))
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{size} H{size} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n" + luma + chroma + chroma)
    return path

"""The door page in headless Chromium against the real server: a wedge scanner typing codes, the
answers staff see, and offline scanning with the queue uploaded once the network is back."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from playwright.async_api import BrowserContext, Page, Playwright, Request, Route, expect

from tests.browser.conftest import (
    CHROMIUM_ARGS,
    Gala,
    Server,
    chromium_path,
    make_gala,
    qr_video,
    sign_in,
    wedge_scan,
)


async def expect_answer(page: Page, seq: int, answer: str, *, offline: bool = False) -> None:
    panel = page.locator("#result")
    await expect(panel).to_have_attribute("data-seq", str(seq))
    await expect(panel).to_have_attribute("data-result", answer)
    await expect(panel).to_have_attribute("data-offline", "true" if offline else "false")


def server_stats(server: Server, gala: Gala) -> dict[str, object]:
    with server.client(gala.door) as c:
        r = c.get(f"/v1/galas/{gala.id}/checkin-stats")
        assert r.status_code == 200, r.text
        return dict(r.json())


async def test_wedge_scanner_admits_then_refuses_a_second_entry(context: BrowserContext, door_server: Server) -> None:
    gala = make_gala(door_server, guests=["Amira Haddad", "Jonas Berg"])
    page = await context.new_page()
    problems: list[str] = []  # script errors, and anything the page's Content-Security-Policy blocked
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    await sign_in(page, gala, gate="North")
    await expect(page.locator("#gala-label")).to_contain_text("North gate")

    await wedge_scan(page, gala.tickets[0]["code"])
    await expect_answer(page, 1, "admitted")
    await expect(page.locator("#result-word")).to_have_text("Admitted")
    await expect(page.locator("#result-guest")).to_have_text("Amira Haddad")
    await expect(page.locator("#result-seat")).to_contain_text("Seat A1")
    await expect(page.locator("#result-seat")).to_contain_text("Patron")
    # The field is clear and keeps the focus for the next guest.
    await expect(page.get_by_label("Ticket code")).to_have_value("")
    await expect(page.get_by_label("Ticket code")).to_be_focused()
    await expect(page.locator("#count-admitted")).to_have_text("1")
    await expect(page.locator("#count-expected")).to_have_text("2")

    await wedge_scan(page, gala.tickets[0]["code"])
    await expect_answer(page, 2, "already_checked_in")
    await expect(page.locator("#result-word")).to_have_text("Already checked in")
    await expect(page.locator("#result-reason")).to_have_text(re.compile(r"Already used at .+ at North gate\."))
    await expect(page.locator("#result-guest")).to_have_text("Amira Haddad")

    # Garbage from the scanner is an answer too, never an error page.
    await wedge_scan(page, "HELLO-WORLD")
    await expect_answer(page, 3, "invalid")

    stats = server_stats(door_server, gala)
    assert stats["admitted"] == 1
    assert [(g["gate"], g["admitted"]) for g in stats["by_gate"]] == [("North", 1)]
    history = page.locator("#history li")
    await expect(history).to_have_count(3)
    await expect(history.nth(2)).to_contain_text("Admitted")
    assert problems == []


async def test_offline_scans_are_queued_and_uploaded_when_back_online(
    context: BrowserContext, door_server: Server
) -> None:
    gala = make_gala(door_server, guests=["Amira Haddad", "Jonas Berg", "Chen Wei"])
    page = await context.new_page()
    await sign_in(page, gala, gate="South")
    await wedge_scan(page, gala.tickets[0]["code"])
    await expect_answer(page, 1, "admitted")

    await context.set_offline(True)
    await expect(page.locator("#net")).to_have_attribute("data-state", "offline")

    # Another guest, decided on the phone from the offline list: the signature checks out, the ticket is valid.
    await wedge_scan(page, gala.tickets[1]["code"])
    await expect_answer(page, 2, "admitted", offline=True)
    await expect(page.locator("#result-guest")).to_have_text("Jonas Berg")
    await expect(page.locator("#result-seat")).to_contain_text("Seat A2")
    await expect(page.locator("#result-note")).to_contain_text("Offline")
    await expect(page.locator("#queue")).to_be_visible()
    await expect(page.locator("#queue")).to_have_attribute("data-count", "1")
    await expect(page.locator("#queue-status")).to_have_text("1 scan waiting to upload.")
    await expect(page.locator("#count-admitted")).to_have_text("2")  # 1 counted by the server + 1 not uploaded yet

    # The offline list knows what was admitted online before the cut, and what this phone admitted offline.
    await wedge_scan(page, gala.tickets[0]["code"])
    await expect_answer(page, 3, "already_checked_in", offline=True)
    await wedge_scan(page, gala.tickets[1]["code"])
    await expect_answer(page, 4, "already_checked_in", offline=True)
    await expect(page.locator("#queue")).to_have_attribute("data-count", "3")

    # Nothing reached the server yet.
    assert server_stats(door_server, gala)["admitted"] == 1

    await context.set_offline(False)
    await expect(page.locator("#net")).to_have_attribute("data-state", "online")
    await expect(page.locator("#queue")).to_have_attribute("data-count", "0")
    await expect(page.locator("#queue")).to_be_hidden()
    await expect(page.locator("#queue-status")).to_have_text("Nothing waiting to upload.")
    await expect(page.locator("#count-admitted")).to_have_text("2")
    await expect(page.locator("#count-admitted")).to_have_attribute("data-server", "2")
    await expect(page.locator('#history li[data-status="uploaded"]')).to_have_count(3)

    stats = server_stats(door_server, gala)
    assert stats["admitted"] == 2
    gates = {g["gate"]: g["admitted"] for g in stats["by_gate"]}
    assert gates == {"South": 2}
    # The server holds the offline admission: the same code online is now a second entry.
    with door_server.client(gala.door) as c:
        r = c.post("/v1/scans", json={"code": gala.tickets[1]["code"], "gala_id": gala.id, "gate": "West"})
        assert r.status_code == 200, r.text
        assert r.json()["result"] == "already_checked_in"
        assert r.json()["first_gate"] == "South"
    # The third guest was never scanned.
    assert stats["expected"] == 3


async def test_a_count_read_before_the_upload_does_not_put_the_count_back(
    context: BrowserContext, door_server: Server
) -> None:
    """Back online, the page asks for the count at once and again after uploading its queue. The two
    answers can arrive in either order: here the first is made to read the count before the upload and
    to arrive last, and the page must keep the newer count."""
    gala = make_gala(door_server, guests=["Amira Haddad", "Jonas Berg"])
    page = await context.new_page()
    await sign_in(page, gala, gate="South")
    await wedge_scan(page, gala.tickets[0]["code"])
    await expect_answer(page, 1, "admitted")
    await expect(page.locator("#count-admitted")).to_have_attribute("data-server", "1")
    await context.set_offline(True)
    await expect(page.locator("#net")).to_have_attribute("data-state", "offline")
    await wedge_scan(page, gala.tickets[1]["code"])
    await expect_answer(page, 2, "admitted", offline=True)

    stale_read = asyncio.Event()
    stale_answered: asyncio.Future[Request] = asyncio.get_running_loop().create_future()
    stats_requests = 0

    async def on_stats(route: Route) -> None:
        nonlocal stats_requests
        stats_requests += 1
        if stats_requests > 1:
            await route.continue_()
            return
        response = await route.fetch()  # read now, before the upload below is let through
        assert (await response.json())["admitted"] == 1
        stale_read.set()
        # Answer only once the page shows the count read after the upload.
        await page.locator('#count-admitted[data-server="2"]').wait_for()
        await route.fulfill(response=response)
        stale_answered.set_result(route.request)

    async def on_upload(route: Route) -> None:
        await stale_read.wait()
        await route.continue_()

    await page.route("**/checkin-stats", on_stats)
    await page.route("**/v1/scans/batch", on_upload)
    finished: list[Request] = []
    page.on("requestfinished", lambda r: finished.append(r))
    await context.set_offline(False)

    request = await asyncio.wait_for(stale_answered, 30)
    for _ in range(300):  # until the page has the stale answer's body
        if request in finished:
            break
        await asyncio.sleep(0.05)
    assert request in finished
    await page.evaluate("() => new Promise((resolve) => setTimeout(resolve, 100))")  # and its code ran
    assert await page.locator("#count-admitted").get_attribute("data-server") == "2"
    await expect(page.locator("#count-admitted")).to_have_text("2")
    assert stats_requests >= 2
    assert server_stats(door_server, gala)["admitted"] == 2


async def test_offline_refuses_forged_and_foreign_codes(context: BrowserContext, door_server: Server) -> None:
    gala = make_gala(door_server, guests=["Amira Haddad"])
    other = make_gala(door_server, guests=["Lena Ortiz"], title="Other Gala")
    page = await context.new_page()
    await sign_in(page, gala)
    await context.set_offline(True)
    await expect(page.locator("#net")).to_have_attribute("data-state", "offline")

    code = gala.tickets[0]["code"]
    # Change one character of the signature: still a well-formed code, but not one the server signed.
    forged = code[:-10] + ("A" if code[-10] != "A" else "B") + code[-9:]
    await wedge_scan(page, forged)
    await expect_answer(page, 1, "invalid", offline=True)
    await expect(page.locator("#result-reason")).to_contain_text("signature")

    await wedge_scan(page, other.tickets[0]["code"])
    await expect_answer(page, 2, "wrong_gala", offline=True)

    await wedge_scan(page, code.lower())
    await expect_answer(page, 3, "invalid", offline=True)

    await wedge_scan(page, code)
    await expect_answer(page, 4, "admitted", offline=True)
    await expect(page.locator("#result-guest")).to_have_text("Amira Haddad")

    await context.set_offline(False)
    await expect(page.locator("#queue")).to_have_attribute("data-count", "0")
    stats = server_stats(door_server, gala)
    assert stats["admitted"] == 1
    scans = {s["result"]: s["count"] for s in stats["scans"]}
    assert scans.get("admitted") == 1
    assert scans.get("invalid") == 2
    assert scans.get("wrong_gala") == 1


async def test_door_key_is_checked_kept_and_the_page_reopens_offline(
    context: BrowserContext, door_server: Server
) -> None:
    gala = make_gala(door_server, guests=["Amira Haddad", "Jonas Berg"])
    page = await context.new_page()
    await page.goto("/door")
    await page.get_by_label("Door key", exact=True).fill("not-a-real-key")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#signin-error")).to_have_text("This key is not accepted.")

    await sign_in(page, gala)
    # A reload (or the phone reopening the tab) goes straight back to scanning.
    await page.reload()
    await expect(page.locator("body")).to_have_attribute("data-screen", "scan")
    await expect(page.locator("#sync-status")).to_have_attribute("data-tickets", "2")
    await wedge_scan(page, gala.tickets[0]["code"])
    await expect_answer(page, 1, "admitted")

    # The phone reloads the tab in a hall with no network: the service worker's copy of the page opens,
    # with the offline list, the door key and the gate still there.
    await page.wait_for_function("navigator.serviceWorker && navigator.serviceWorker.controller !== null")
    await context.set_offline(True)
    await page.reload()
    await expect(page.locator("body")).to_have_attribute("data-screen", "scan")
    await expect(page.locator("#net")).to_have_attribute("data-state", "offline")
    await expect(page.locator("#sync-status")).to_have_attribute("data-tickets", "2")
    await wedge_scan(page, gala.tickets[1]["code"])
    await expect_answer(page, 1, "admitted", offline=True)
    await expect(page.locator("#result-guest")).to_have_text("Jonas Berg")
    await context.set_offline(False)
    await expect(page.locator("#queue")).to_have_attribute("data-count", "0")
    assert server_stats(door_server, gala)["admitted"] == 2


async def test_camera_scan(playwright: Playwright, door_server: Server, tmp_path: Path) -> None:
    """Chromium's fake camera shows a ticket's QR code; the page decodes it (BarcodeDetector where the
    browser has one, the bundled jsQR otherwise) and admits the guest."""
    gala = make_gala(door_server, guests=["Amira Haddad"])
    video = qr_video(gala.tickets[0]["code"], tmp_path / "ticket.y4m")
    args = [
        *CHROMIUM_ARGS,
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    ]
    browser = await playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=args)
    try:
        ctx = await browser.new_context(base_url=door_server.base, viewport={"width": 390, "height": 844})
        await ctx.grant_permissions(["camera"])
        page = await ctx.new_page()
        await sign_in(page, gala)
        await page.get_by_role("button", name="Start camera").click()
        await expect(page.locator("#camera-toggle")).to_have_attribute("aria-pressed", "true")
        await expect(page.locator("#camera-status")).to_have_attribute(
            "data-decoder", re.compile("jsQR|BarcodeDetector")
        )
        await expect_answer(page, 1, "admitted")
        await expect(page.locator("#result-guest")).to_have_text("Amira Haddad")
        # The same code still in front of the camera is not scanned again and again.
        await page.wait_for_timeout(2500)
        await expect(page.locator("#result")).to_have_attribute("data-seq", "1")
        await page.get_by_role("button", name="Stop camera").click()
        await expect(page.locator("#camera")).to_be_hidden()
    finally:
        await browser.close()
    assert server_stats(door_server, gala)["admitted"] == 1


async def test_undo_a_mis_scan_online_and_offline(context: BrowserContext, door_server: Server) -> None:
    gala = make_gala(door_server, guests=["Amira Haddad", "Jonas Berg"])
    page = await context.new_page()
    await sign_in(page, gala)
    undo = page.locator("#undo")
    await expect(undo).to_be_disabled()

    await wedge_scan(page, gala.tickets[0]["code"])
    await expect_answer(page, 1, "admitted")
    await expect(undo).to_have_text("Undo: Amira Haddad")
    await undo.click()
    await expect(undo).to_have_text("Tap again to undo")  # two taps, so a stray one changes nothing
    await undo.click()
    await expect_answer(page, 2, "undone")
    await expect(undo).to_be_disabled()
    await expect(page.locator("#count-admitted")).to_have_text("0")
    assert server_stats(door_server, gala)["admitted"] == 0
    # The guest can come in again.
    await wedge_scan(page, gala.tickets[0]["code"])
    await expect_answer(page, 3, "admitted")

    # Offline, undo takes the admission out of the queue before it is ever uploaded.
    await context.set_offline(True)
    await expect(page.locator("#net")).to_have_attribute("data-state", "offline")
    await wedge_scan(page, gala.tickets[1]["code"])
    await expect_answer(page, 4, "admitted", offline=True)
    await expect(page.locator("#queue")).to_have_attribute("data-count", "1")
    await undo.click()
    await undo.click()
    await expect_answer(page, 5, "undone")
    await expect(page.locator("#queue")).to_have_attribute("data-count", "0")
    await wedge_scan(page, gala.tickets[1]["code"])
    await expect_answer(page, 6, "admitted", offline=True)
    await context.set_offline(False)
    await expect(page.locator("#queue")).to_have_attribute("data-count", "0")
    assert server_stats(door_server, gala)["admitted"] == 2

"""Ticket renderings (QR PNG and SVG, the PDF), the signed code, and transfers, through the API."""

from __future__ import annotations

import base64
import io
import random
import re
import secrets
import xml.etree.ElementTree as ET
from datetime import timedelta
from typing import Any

import httpx
import pytest
import zxingcpp
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from PIL import Image, ImageDraw
from pypdf import PdfReader
from sqlalchemy import update
from sqlmodel import col

from tests.factories import on_sale_theatre, order_body
from tickets.clock import utc_now
from tickets.db import Database
from tickets.keys import KeyRing
from tickets.payments import service as payments_service
from tickets.tickets import codes
from tickets.tickets.models import Ticket


async def paid_order(
    client: httpx.AsyncClient, admin: dict[str, str], attendees: list[dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """A free (so paid at once) order of one seat per attendee; returns (gala, order, tickets)."""
    g, tier, seats = await on_sale_theatre(client, admin, price=0)
    labels = sorted(seats)
    items = [{"ticket_type_id": tier["id"], "seat_id": seats[labels[i]], **a} for i, a in enumerate(attendees)]
    body = order_body(g["id"], items, buyer_email=f"buyer-{secrets.token_hex(4)}@example.org")
    r = await client.post("/v1/orders", json=body)
    assert r.status_code == 201 and r.json()["status"] == "paid", r.text
    order = r.json()
    r = await client.get(f"/v1/orders/{order['id']}/tickets", headers={"X-Order-Token": order["access_token"]})
    return g, order, r.json()["data"]


def buyer(order: dict[str, Any]) -> dict[str, str]:
    return {"X-Order-Token": order["access_token"]}


def decode_qr(image: Image.Image) -> zxingcpp.Barcode:
    found = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)
    assert len(found) == 1, found
    return found[0]


def verified_by_openssl(key: bytes, body: bytes, signature: bytes) -> bool:
    """The same check as codes.verify (libsodium), by another implementation (OpenSSL's)."""
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, body)
    except InvalidSignature:
        return False
    return True


async def test_qr_png_decodes_to_the_ticket_code(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    _, order, tickets = await paid_order(client, admin, [{"attendee_name": "Ada Q"}])
    ticket = tickets[0]
    r = await client.get(f"/v1/tickets/{ticket['id']}/qr.png", headers=buyer(order))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert "no-store" in r.headers["cache-control"]
    barcode = decode_qr(Image.open(io.BytesIO(r.content)))
    assert barcode.text == ticket["code"]
    assert barcode.ec_level == "M"
    assert int(barcode.extra["Version"]) <= 10
    # Staff may fetch it too; a smaller scale still scans.
    r = await client.get(f"/v1/tickets/{ticket['id']}/qr.png", params={"scale": 4}, headers=admin)
    assert r.status_code == 200
    assert decode_qr(Image.open(io.BytesIO(r.content))).text == ticket["code"]


def rasterise_svg(svg: bytes, scale: int = 8) -> Image.Image:
    """Draw our SVG (a white square and one path of `M x y h n v1 h-n z` runs) to pixels."""
    root = ET.fromstring(svg)
    ns = {"s": "http://www.w3.org/2000/svg"}
    size = int(root.attrib["viewBox"].split()[2])
    image = Image.new("L", (size * scale, size * scale), 255)
    draw = ImageDraw.Draw(image)
    path = root.find("s:path", ns)
    assert path is not None
    for x, y, n in re.findall(r"M(\d+) (\d+)h(\d+)v1h-\d+z", path.attrib["d"]):
        x0, y0, w = int(x) * scale, int(y) * scale, int(n) * scale
        draw.rectangle([x0, y0, x0 + w - 1, y0 + scale - 1], fill=0)
    return image


async def test_qr_svg_is_valid_xml_and_scans(
    client: httpx.AsyncClient, admin: dict[str, str], box: dict[str, str]
) -> None:
    _, _, tickets = await paid_order(client, admin, [{"attendee_name": "Ada Q"}])
    r = await client.get(f"/v1/tickets/{tickets[0]['id']}/qr.svg", headers=box)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("image/svg+xml")
    root = ET.fromstring(r.content)  # well-formed XML, or this raises
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert decode_qr(rasterise_svg(r.content)).text == tickets[0]["code"]


async def test_a_code_with_one_character_changed_is_rejected(
    client: httpx.AsyncClient, admin: dict[str, str], app: Any
) -> None:
    gala, _, tickets = await paid_order(client, admin, [{"attendee_name": "Ada Q"}])
    code = tickets[0]["code"]
    key = codes.public_key(app.state.keys, gala["id"])
    payload, body, signature = codes.parse(code)
    assert (payload.ticket_id, payload.gala_id, payload.version) == (tickets[0]["id"], gala["id"], 1)
    assert codes.verify(key, body, signature) and verified_by_openssl(key, body, signature)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    for i, char in enumerate(code):
        for replacement in {alphabet[(alphabet.index(char) + 1) % 32], char.lower(), "0"} - {char}:
            changed = code[:i] + replacement + code[i + 1 :]
            try:
                _, body, signature = codes.parse(changed)
            except codes.MalformedCode:
                continue
            assert not codes.verify(key, body, signature), f"accepted with position {i} changed"
            assert not verified_by_openssl(key, body, signature)
    # The same ticket signed for another gala's key does not verify with this one.
    other = codes.public_key(app.state.keys, "gal_" + "z" * 20)
    assert not codes.verify(other, *codes.parse(code)[1:])
    assert not verified_by_openssl(other, *codes.parse(code)[1:])


def _parse_by_the_standard_library(code: str) -> bytes | None:
    """What codes.parse must accept, said with the standard library's base32: the bytes, or None."""
    if not code or len(code) > 400 or not code.isascii():
        return None
    try:
        raw = base64.b32decode(code + "=" * (-len(code) % 8))
    except ValueError:
        return None
    if len(raw) != codes.CODE_BYTES or base64.b32encode(raw).decode().rstrip("=") != code:
        return None
    return raw


def test_code_parsing_accepts_exactly_the_canonical_base32_strings() -> None:
    """codes.parse reads base32 as one number (the door's every scan): it must accept and refuse
    exactly what the standard library's decoder with a re-encoding check does."""
    rng = random.Random(20261203)
    keys = KeyRing(b"a test secret, " + b"x" * 40)
    code = codes.encode(keys, codes.CodePayload("tkt_" + "A1b2" * 5, "gal_" + "Zz09" * 5, 7))
    samples = [code, code.lower(), code + "=", code + "====", code[:-1], code + "A", " " + code[1:], "+" + code[1:]]
    for i in rng.sample(range(len(code)), 60):  # one character changed, into anything printable
        for c in rng.sample([chr(x) for x in range(33, 127)], 12):
            samples.append(code[:i] + c + code[i + 1 :])
    for bits in range(1, 32):  # stray bits set in the last character
        samples.append(code[:-1] + "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[bits])
    for _ in range(200):  # other canonical codes (the format's own checks come after the bytes)
        samples.append(base64.b32encode(bytes([1]) + rng.randbytes(codes.CODE_BYTES - 1)).decode().rstrip("="))
    accepted = 0
    for sample in samples:
        expected = _parse_by_the_standard_library(sample)
        try:
            _, body, signature = codes.parse(sample)
        except codes.MalformedCode:
            raw = None
        else:
            raw = body + signature
        if expected is not None and raw is None:  # the format's own checks (version byte, ids) may refuse
            assert not expected[1:41].isalnum() or expected[0] != codes.FORMAT_VERSION, sample
            continue
        assert raw == expected, sample
        accepted += raw is not None
    assert accepted >= 2  # the code itself and some of the random ones


async def test_pdf_has_one_page_per_valid_ticket(
    client: httpx.AsyncClient, admin: dict[str, str], box: dict[str, str], door: dict[str, str], db: Database
) -> None:
    names = ["Zoë Ashgrove", "Kwame Mensah", "Ines Moreau"]
    gala, order, tickets = await paid_order(client, admin, [{"attendee_name": n} for n in names])
    # Void one ticket (as a partial refund does): it leaves the PDF and has no QR any more.
    async with db.sessions() as session:
        await payments_service.void_tickets(session, ticket_ids=[tickets[1]["id"]], now=utc_now())
        await session.commit()

    r = await client.get(f"/v1/orders/{order['id']}/tickets.pdf", headers=buyer(order))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf"
    assert f"tickets-{order['id']}.pdf" in r.headers["content-disposition"]
    reader = PdfReader(io.BytesIO(r.content))
    assert len(reader.pages) == 2
    texts = [page.extract_text() for page in reader.pages]
    assert "Zoë Ashgrove" in texts[0] and "Ines Moreau" in texts[1]
    assert not any("Kwame" in t for t in texts)
    for text in texts:
        assert gala["title"] in text and "Meridian Arts Centre" in text and "Regular" in text
        assert order["id"] in text
        # The gala starts at a UTC instant; the page shows it in the gala's zone (America/Toronto).
        assert re.search(r"\d{1,2}:\d{2} (AM|PM) E[SD]T", text), text

    r = await client.get(f"/v1/tickets/{tickets[1]['id']}/qr.png", headers=buyer(order))
    assert r.status_code == 409 and r.json()["code"] == "ticket_void"
    r = await client.get(f"/v1/tickets/{tickets[1]['id']}/qr.svg", headers=buyer(order))
    assert r.status_code == 409 and r.json()["code"] == "ticket_void"

    # Who may fetch it: the buyer (header, or the emailed link's query), box office; not door, not anyone.
    url = f"/v1/orders/{order['id']}/tickets.pdf"
    assert (await client.get(url, headers=box)).status_code == 200
    assert (await client.get(url, params={"access_token": order["access_token"]})).status_code == 200
    assert (await client.get(url, headers=door)).status_code == 403
    assert (await client.get(url)).status_code == 401
    r = await client.get(url, headers={"X-Order-Token": "otk_wrong"})
    assert r.status_code == 401 and r.json()["code"] == "invalid_order_token"


async def test_pdf_of_an_unpaid_order_is_refused(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    gala, tier, seats = await on_sale_theatre(client, admin, price=5000)
    r = await client.post(
        "/v1/orders", json=order_body(gala["id"], [{"ticket_type_id": tier["id"], "seat_id": seats["A1"]}])
    )
    order = r.json()
    assert order["status"] == "pending"
    r = await client.get(f"/v1/orders/{order['id']}/tickets.pdf", headers=buyer(order))
    assert r.status_code == 409 and r.json()["code"] == "no_valid_tickets"
    assert r.headers["content-type"] == "application/problem+json"


async def test_transfer_reissues_the_ticket_with_a_new_version(
    client: httpx.AsyncClient, admin: dict[str, str], app: Any
) -> None:
    gala, order, tickets = await paid_order(client, admin, [{"attendee_name": "Ada Q", "dietary": "vegan"}])
    old = tickets[0]
    r = await client.post(
        f"/v1/tickets/{old['id']}/transfer",
        json={"attendee_name": "Grace H", "attendee_email": "Grace.H@Example.org"},
        headers=buyer(order),
    )
    assert r.status_code == 200, r.text
    new = r.json()
    assert (new["id"], new["version"], new["status"]) == (old["id"], 2, "valid")
    assert (new["attendee_name"], new["attendee_email"], new["dietary"]) == ("Grace H", "grace.h@example.org", None)
    assert new["code"] != old["code"]
    key = codes.public_key(app.state.keys, gala["id"])
    for code, version in ((old["code"], 1), (new["code"], 2)):
        payload, body, signature = codes.parse(code)
        assert payload.version == version and codes.verify(key, body, signature)
        assert verified_by_openssl(key, body, signature)
    # The ticket now shows, and renders, the new code only.
    r = await client.get(f"/v1/tickets/{old['id']}", headers=buyer(order))
    assert r.json()["code"] == new["code"]
    r = await client.get(f"/v1/tickets/{old['id']}/qr.png", headers=buyer(order))
    assert decode_qr(Image.open(io.BytesIO(r.content))).text == new["code"]


async def test_transfer_rules(
    client: httpx.AsyncClient, admin: dict[str, str], box: dict[str, str], db: Database
) -> None:
    gala, order, tickets = await paid_order(
        client, admin, [{"attendee_name": "A"}, {"attendee_name": "B"}, {"attendee_name": "C"}]
    )
    body = {"attendee_name": "New Holder", "attendee_email": "new@example.org"}
    url = f"/v1/tickets/{tickets[0]['id']}/transfer"
    r = await client.post(url, json={"attendee_name": "No email"}, headers=buyer(order))
    assert r.status_code == 422
    r = await client.post(url, json={**body, "attendee_name": "Null\u0000Byte"}, headers=buyer(order))
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "attendee_name"]
    assert (await client.post(url, json=body)).status_code == 401
    # After the gala's cutoff the buyer (and box office) may not; an admin still may.
    r = await client.patch(
        f"/v1/galas/{gala['id']}",
        json={"name_change_cutoff": (utc_now() - timedelta(minutes=1)).isoformat()},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    r = await client.post(url, json=body, headers=buyer(order))
    assert r.status_code == 409 and r.json()["code"] == "name_change_closed"
    r = await client.post(url, json=body, headers=box)
    assert r.status_code == 409 and r.json()["code"] == "name_change_closed"
    r = await client.post(url, json=body, headers=admin)
    assert r.status_code == 200 and r.json()["version"] == 2
    # A void ticket cannot be transferred; nor one already used at the door.
    async with db.sessions() as session:
        await payments_service.void_tickets(session, ticket_ids=[tickets[1]["id"]], now=utc_now())
        await session.execute(update(Ticket).where(col(Ticket.id) == tickets[2]["id"]).values(checked_in_at=utc_now()))
        await session.commit()
    r = await client.post(f"/v1/tickets/{tickets[1]['id']}/transfer", json=body, headers=admin)
    assert r.status_code == 409 and r.json()["code"] == "ticket_void"
    r = await client.post(f"/v1/tickets/{tickets[2]['id']}/transfer", json=body, headers=admin)
    assert r.status_code == 409 and r.json()["code"] == "ticket_checked_in"


@pytest.mark.parametrize("path", ["/v1/tickets/tkt_{x}/qr.png", "/v1/tickets/tkt_{x}/qr.svg"])
async def test_unknown_ticket_is_404(client: httpx.AsyncClient, admin: dict[str, str], path: str) -> None:
    r = await client.get(path.format(x="q" * 20), headers=admin)
    assert r.status_code == 404 and r.json()["code"] == "ticket_not_found"


async def test_resend_of_an_unpaid_order_is_refused(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    gala, tier, seats = await on_sale_theatre(client, admin, price=5000)
    r = await client.post(
        "/v1/orders", json=order_body(gala["id"], [{"ticket_type_id": tier["id"], "seat_id": seats["A1"]}])
    )
    order = r.json()
    r = await client.post(f"/v1/orders/{order['id']}/resend", headers={"X-Order-Token": order["access_token"]})
    assert r.status_code == 409 and r.json()["code"] == "no_valid_tickets"

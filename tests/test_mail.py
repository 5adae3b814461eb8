"""Ticket emails: queued with the payment, sent by the `mail.send_pending` job to a real SMTP server
(aiosmtpd on loopback), retried while the server is down, never sent twice.

These tests run on a database of their own (migrated like the session one): the job sends every due
message, and the other test modules leave hundreds of paid orders behind whose mail would be sent
(and rendered) here too. The app has no SMTP settings; each run of the job is given them.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pypdf import PdfReader
from sqlalchemy import select
from sqlmodel import col

from tests.conftest import make_settings
from tests.factories import on_sale_theatre, order_body
from tests.smtp import Inbox, attachments, bodies, closed_port, smtp_server
from tests.support import asgi_client, running_app, scratch_database
from tickets.auth import service as auth_service
from tickets.auth.models import Role
from tickets.clock import utc_now
from tickets.config import Settings
from tickets.db import Database
from tickets.mail import service as mail_service
from tickets.mail.models import MailMessage
from tickets.migrate import upgrade_to_head

# --- an app and database of this module's own (overriding the session fixtures of the same names) ---


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with scratch_database(os.environ.get("TEST_DATABASE_URL"), tmp_path_factory.mktemp("mail-db")) as url:
        upgrade_to_head(url)
        yield make_settings(url, tmp_path_factory.mktemp("mail-data"))


@pytest.fixture(scope="module")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with running_app(settings) as application:
        yield application


@pytest.fixture(scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as c:
        yield c


@pytest.fixture(scope="module")
def db(app: FastAPI) -> Database:
    database: Database = app.state.db
    return database


async def _headers(db: Database, role: Role) -> dict[str, str]:
    async with db.sessions() as session:
        _, plain = await auth_service.create_api_key(session, name=f"mail test {role}", role=role, gala_ids=None)
        await session.commit()
    return {"Authorization": f"Bearer {plain}"}


@pytest.fixture(scope="module")
async def admin(db: Database) -> dict[str, str]:
    return await _headers(db, Role.admin)


@pytest.fixture(scope="module")
async def box(db: Database) -> dict[str, str]:
    return await _headers(db, Role.box_office)


@pytest.fixture(scope="module")
async def door(db: Database) -> dict[str, str]:
    return await _headers(db, Role.door)


# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    with smtp_server() as server:
        yield server


def smtp_settings(settings: Settings, port: int, **extra: Any) -> Settings:
    return settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": port, **extra})


async def send(app: FastAPI, settings: Settings, **kw: Any) -> int:
    """One run of the periodic job, as a worker would run it."""
    return await mail_service.send_pending(app.state.db, settings, app.state.keys, **kw)


def address(name: str) -> str:
    return f"{name}-{secrets.token_hex(4)}@example.org"


async def free_order(
    client: httpx.AsyncClient, admin: dict[str, str], attendees: list[dict[str, Any]], *, buyer_email: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    gala, tier, seats = await on_sale_theatre(client, admin, price=0)
    labels = sorted(seats)
    items = [{"ticket_type_id": tier["id"], "seat_id": seats[labels[i]], **a} for i, a in enumerate(attendees)]
    r = await client.post("/v1/orders", json=order_body(gala["id"], items, buyer_email=buyer_email))
    assert r.status_code == 201 and r.json()["status"] == "paid", r.text
    return gala, r.json()


async def mail_rows(db: Database, order_id: str) -> list[MailMessage]:
    async with db.read_sessions() as session:
        rows = await session.execute(
            select(MailMessage).where(col(MailMessage.order_id) == order_id).order_by(col(MailMessage.created_at))
        )
        return list(rows.scalars())


async def test_paid_order_emails_the_buyer_the_pdf_and_each_guest_their_ticket(
    client: httpx.AsyncClient, admin: dict[str, str], app: FastAPI, settings: Settings, db: Database, inbox: Inbox
) -> None:
    buyer_email, guest_email = address("buyer"), address("guest")
    gala, order = await free_order(
        client,
        admin,
        [
            {"attendee_name": "Leyla M"},
            {"attendee_name": "Zoë Guest", "attendee_email": guest_email},
            {"attendee_name": "Leyla's Plus One", "attendee_email": buyer_email.upper()},  # the buyer: no extra mail
        ],
        buyer_email=buyer_email,
    )
    rows = await mail_rows(db, order["id"])
    assert sorted((r.kind, r.status) for r in rows) == [("guest_ticket", "pending"), ("order_tickets", "pending")]
    assert {r.dedupe_key for r in rows} >= {f"order-paid:{order['id']}"}

    await send(app, smtp_settings(settings, inbox.port))

    [mail] = inbox.to(buyer_email)
    assert mail["Subject"] == f"Your tickets for {gala['title']}"
    assert mail["From"] == settings.mail_from
    text, html = bodies(mail)
    assert "Zoë Guest" in text and "Zoë Guest" in html and "Leyla M" in text
    files = attachments(mail)
    assert list(files) == [f"tickets-{order['id']}.pdf"]
    pdf = PdfReader(io.BytesIO(files[f"tickets-{order['id']}.pdf"]))
    assert len(pdf.pages) == 3
    assert "Zoë Guest" in pdf.pages[1].extract_text()
    # The link opens the buyer's tickets (no ORDER_URL_TEMPLATE here: the API's own PDF).
    link = f"{settings.public_base_url}/v1/orders/{order['id']}/tickets.pdf?access_token={order['access_token']}"
    assert link in text and link.replace("&", "&amp;") in html
    r = await client.get(link.removeprefix(settings.public_base_url))
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"

    [guest_mail] = inbox.to(guest_email)
    assert guest_mail["Subject"] == f"Your ticket for {gala['title']}"
    guest_text, _ = bodies(guest_mail)
    assert order["access_token"] not in guest_mail.as_string()  # a guest never gets the buyer's key
    [(name, content)] = attachments(guest_mail).items()
    guest_pdf = PdfReader(io.BytesIO(content))
    assert len(guest_pdf.pages) == 1 and "Zoë Guest" in guest_pdf.pages[0].extract_text()
    assert "Zoë Guest" in guest_text and name.startswith("ticket-tkt_")

    rows = await mail_rows(db, order["id"])
    assert {r.status for r in rows} == {"sent"} and all(r.sent_at and r.attempts == 1 for r in rows)


async def test_the_job_never_sends_a_message_twice(
    client: httpx.AsyncClient, admin: dict[str, str], app: FastAPI, settings: Settings, inbox: Inbox
) -> None:
    buyers = [address("twice") for _ in range(4)]
    for email in buyers:
        await free_order(client, admin, [{"attendee_name": "A"}], buyer_email=email)
    mail = smtp_settings(settings, inbox.port)
    # Two workers at once, then again: each message goes out exactly once.
    await asyncio.gather(send(app, mail), send(app, mail))
    await send(app, mail)
    assert [len(inbox.to(email)) for email in buyers] == [1, 1, 1, 1]


async def test_without_smtp_host_mail_stays_pending(
    client: httpx.AsyncClient, admin: dict[str, str], app: FastAPI, settings: Settings, db: Database
) -> None:
    assert settings.smtp_host is None
    _, order = await free_order(client, admin, [{"attendee_name": "A"}], buyer_email=address("unset"))
    assert await send(app, settings) == 0
    [row] = await mail_rows(db, order["id"])
    assert (row.status, row.attempts) == ("pending", 0)


async def test_smtp_down_mail_waits_and_is_sent_once_later(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    app: FastAPI,
    settings: Settings,
    db: Database,
    inbox: Inbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="tickets")
    await send(app, smtp_settings(settings, inbox.port))  # send what other tests left, so ours is next
    buyer_email = address("down")
    _, order = await free_order(client, admin, [{"attendee_name": "A"}], buyer_email=buyer_email)

    now = utc_now()
    assert await send(app, smtp_settings(settings, closed_port()), now=now) == 0
    [row] = await mail_rows(db, order["id"])
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.last_error and "@" not in row.last_error
    assert row.next_attempt_at > now
    # Before its backoff is over the message is not tried again, even with the server back.
    assert await send(app, smtp_settings(settings, inbox.port), now=now) == 0
    assert inbox.to(buyer_email) == []

    later = row.next_attempt_at + timedelta(seconds=1)
    assert await send(app, smtp_settings(settings, inbox.port), now=later) >= 1
    await send(app, smtp_settings(settings, inbox.port), now=later + timedelta(hours=1))
    assert len(inbox.to(buyer_email)) == 1
    [row] = await mail_rows(db, order["id"])
    assert (row.status, row.attempts, row.last_error) == ("sent", 2, None)
    # The job logged the failure and the sending, by message id: never an address or a token.
    ours = [r for r in caplog.records if r.name.startswith("tickets")]
    assert {getattr(r, "event", None) for r in ours} >= {"mail.send_failed", "mail.sent"}
    text = "\n".join(r.getMessage() for r in ours)
    assert row.id in text and buyer_email not in text and order["access_token"] not in text


async def test_transfer_emails_the_new_holder_and_drops_the_old_guest_mail(
    client: httpx.AsyncClient, admin: dict[str, str], app: FastAPI, settings: Settings, db: Database, inbox: Inbox
) -> None:
    buyer_email, first_guest, new_holder = address("buyer"), address("first"), address("new")
    gala, order = await free_order(
        client, admin, [{"attendee_name": "First Guest", "attendee_email": first_guest}], buyer_email=buyer_email
    )
    headers = {"X-Order-Token": order["access_token"]}
    [old] = (await client.get(f"/v1/orders/{order['id']}/tickets", headers=headers)).json()["data"]
    r = await client.post(
        f"/v1/tickets/{old['id']}/transfer",
        json={"attendee_name": "New Holder", "attendee_email": new_holder},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    new = r.json()
    assert new["version"] == 2 and new["code"] != old["code"]

    await send(app, smtp_settings(settings, inbox.port))
    # The first guest's mail (version 1, never sent) is dropped: that code no longer works.
    assert inbox.to(first_guest) == []
    [mail] = inbox.to(new_holder)
    assert gala["title"] in mail["Subject"]
    text, _ = bodies(mail)
    assert "New Holder" in text and "passed a ticket" in text
    [content] = attachments(mail).values()
    page = PdfReader(io.BytesIO(content)).pages[0].extract_text()
    assert "New Holder" in page and "v2" in page
    # The buyer's mail shows the ticket as it is now.
    [buyer_mail] = inbox.to(buyer_email)
    assert "New Holder" in bodies(buyer_mail)[0]
    kinds = {(r.kind, r.ticket_version): r.status for r in await mail_rows(db, order["id"])}
    assert kinds == {
        ("order_tickets", None): "sent",
        ("guest_ticket", 1): "cancelled",
        ("ticket_transfer", 2): "sent",
    }


async def test_resend_emails_the_tickets_again(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    box: dict[str, str],
    door: dict[str, str],
    app: FastAPI,
    settings: Settings,
    inbox: Inbox,
) -> None:
    buyer_email = address("resend")
    _, order = await free_order(client, admin, [{"attendee_name": "A"}], buyer_email=buyer_email)
    mail = smtp_settings(settings, inbox.port)
    await send(app, mail)
    assert len(inbox.to(buyer_email)) == 1

    url = f"/v1/orders/{order['id']}/resend"
    r = await client.post(url, headers={"X-Order-Token": order["access_token"]})
    assert r.status_code == 202, r.text
    assert (await client.post(url, headers=box)).status_code == 202  # a copy is already waiting: merged
    assert (await client.post(url, headers=door)).status_code == 403
    assert (await client.post(url)).status_code == 401
    await send(app, mail)
    messages = inbox.to(buyer_email)
    assert len(messages) == 2
    assert "again" in bodies(messages[1])[0]
    assert len(attachments(messages[1])) == 1


async def test_lookup_emails_links_and_reveals_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], app: FastAPI, settings: Settings, inbox: Inbox
) -> None:
    buyer_email, stranger = address("lookup"), address("stranger")
    gala, first = await free_order(client, admin, [{"attendee_name": "A"}], buyer_email=buyer_email)
    _, second = await free_order(client, admin, [{"attendee_name": "B"}], buyer_email=buyer_email)
    template = "https://tickets.example.org/orders/{order_id}?token={access_token}"
    mail = smtp_settings(settings, inbox.port, order_url_template=template)
    await send(app, mail)

    known = await client.post("/v1/orders/lookup", json={"email": buyer_email.upper()})
    unknown = await client.post("/v1/orders/lookup", json={"email": stranger})
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()
    assert (await client.post("/v1/orders/lookup", json={"email": "not an email"})).status_code == 422
    await send(app, mail)

    assert inbox.to(stranger) == []
    [lookup] = [m for m in inbox.to(buyer_email) if m["Subject"] == "Your ticket orders"]
    text, html = bodies(lookup)
    for order in (first, second):
        link = f"https://tickets.example.org/orders/{order['id']}?token={order['access_token']}"
        assert link in text and gala["title"] in text
    assert not attachments(lookup)
    # Asking again at once sends nothing more (one lookup email per address per quarter hour).
    assert (await client.post("/v1/orders/lookup", json={"email": buyer_email})).status_code == 202
    await send(app, mail)
    assert len([m for m in inbox.to(buyer_email) if m["Subject"] == "Your ticket orders"]) == 1


async def test_a_guest_email_given_later_gets_the_ticket_once(
    client: httpx.AsyncClient, admin: dict[str, str], app: FastAPI, settings: Settings, db: Database, inbox: Inbox
) -> None:
    buyer_email, guest, typo_fixed, second = address("buyer"), address("guest"), address("fixed"), address("other")
    _, order = await free_order(client, admin, [{"attendee_name": "Table guest"}], buyer_email=buyer_email)
    headers = {"X-Order-Token": order["access_token"]}
    [ticket] = (await client.get(f"/v1/orders/{order['id']}/tickets", headers=headers)).json()["data"]
    url = f"/v1/tickets/{ticket['id']}"
    mail = smtp_settings(settings, inbox.port)

    # The buyer names the guest after paying; a typo fixed before the mail went out sends one message,
    # to the corrected address.
    assert (await client.patch(url, json={"attendee_email": guest}, headers=headers)).status_code == 200
    assert (await client.patch(url, json={"attendee_email": typo_fixed}, headers=headers)).status_code == 200
    await send(app, mail)
    assert inbox.to(guest) == []
    [guest_mail] = inbox.to(typo_fixed)
    [content] = attachments(guest_mail).values()
    assert "Table guest" in PdfReader(io.BytesIO(content)).pages[0].extract_text()

    # The same address again, a name change, or the buyer's own address: nothing new.
    for body in ({"attendee_email": typo_fixed}, {"attendee_name": "Renamed"}, {"attendee_email": buyer_email}):
        assert (await client.patch(url, json=body, headers=headers)).status_code == 200
    await send(app, mail)
    assert len(inbox.to(typo_fixed)) == 1 and len(inbox.to(buyer_email)) == 1

    # A new address after the first message was sent: that guest gets it too.
    assert (await client.patch(url, json={"attendee_email": second}, headers=headers)).status_code == 200
    await send(app, mail)
    assert len(inbox.to(second)) == 1
    assert [r.status for r in await mail_rows(db, order["id"]) if r.kind == "guest_ticket"] == ["sent", "sent"]

"""Sending the mail outbox over SMTP: the periodic job `mail.send_pending`.

Each message is claimed by one conditional UPDATE (pending → sending, with a lease) before it is sent,
so two workers never send the same row; the claim is committed before the SMTP conversation, so no
database lock is held while the network is slow. A message that fails for a reason that may pass (the
server is down, a 4xx answer) goes back to pending with an exponential backoff; a permanent refusal
(5xx) or too many attempts marks it failed.

"Never twice" has one honest limit: if a worker dies after the SMTP server accepted a message but
before `sent` is committed, the lease runs out and the message is sent again. SMTP offers nothing
better; the Message-ID is the same on every attempt, so the copy is recognisable.

Bodies are rendered when sent, from the current state: a ticket transferred or voided since the
message was queued is not sent in its old form (the message is cancelled or shows the new code).
Logs name messages and orders by id only, never an email address or a token.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Literal

import aiosmtplib
from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from tickets.clock import utc_now
from tickets.config import Settings
from tickets.db import Database
from tickets.galas.models import Gala
from tickets.keys import KeyRing
from tickets.mail import messages
from tickets.mail.models import MailKind, MailMessage, MailStatus
from tickets.orders.models import PAID_STATUSES, Order
from tickets.tickets import render
from tickets.tickets import service as ticket_service
from tickets.tickets.models import Ticket, TicketStatus

log = logging.getLogger("tickets.mail")

LEASE = timedelta(minutes=15)  # a claimed message whose worker vanished is retried after this
MAX_ATTEMPTS = 15  # with the backoff below: about 9 hours of trying
SMTP_TIMEOUT = 20.0
LOOKUP_MAX_ORDERS = 20

Outcome = Literal["sent", "retry", "unavailable", "failed", "cancelled"]


def backoff(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min, ... at most an hour between attempts."""
    return timedelta(seconds=min(30 * 2 ** max(attempts - 1, 0), 3600))


def order_link(settings: Settings, keys: KeyRing, order_id: str) -> str:
    """The buyer's link to their order: ORDER_URL_TEMPLATE (the frontend), or the API's own PDF."""
    token = keys.order_access_token(order_id)
    if settings.order_url_template:
        return settings.order_url_template.replace("{order_id}", order_id).replace("{access_token}", token)
    return f"{settings.public_base_url.rstrip('/')}/v1/orders/{order_id}/tickets.pdf?access_token={token}"


# --- claiming and recording --------------------------------------------------------------------------


def _due(now: datetime) -> ColumnElement[bool]:
    return or_(
        and_(col(MailMessage.status) == MailStatus.pending, col(MailMessage.next_attempt_at) <= now),
        and_(col(MailMessage.status) == MailStatus.sending, col(MailMessage.locked_until) < now),
    )


async def _claim_one(db: Database, *, now: datetime) -> tuple[str, int] | None:
    """Take the next due message for this worker, or None. The WHERE clause is checked again by the
    UPDATE itself, so of two workers racing for one row exactly one gets it."""
    due = _due(now)
    async with db.sessions() as session:
        candidate = (
            select(col(MailMessage.id))
            .where(due)
            .order_by(col(MailMessage.next_attempt_at), col(MailMessage.id))
            .limit(1)
            .scalar_subquery()
        )
        row = (
            await session.execute(
                update(MailMessage)
                .where(col(MailMessage.id) == candidate, due)
                .values(status=MailStatus.sending, attempts=col(MailMessage.attempts) + 1, locked_until=now + LEASE)
                .returning(col(MailMessage.id), col(MailMessage.attempts))
                .execution_options(synchronize_session=False)
            )
        ).first()
        await session.commit()
    return (row[0], row[1]) if row is not None else None


async def _record(
    db: Database,
    message_id: str,
    attempts: int,
    outcome: Outcome,
    *,
    now: datetime,
    error: str | None = None,
    to: str | None = None,
) -> None:
    """Write down what happened, only if this worker's claim still stands."""
    values: dict[str, object] = {"locked_until": None, "last_error": error[:500] if error else None}
    if outcome == "sent":
        values.update(status=MailStatus.sent, sent_at=now)
        if to is not None:
            values["to_address"] = to
    elif outcome in ("retry", "unavailable") and attempts < MAX_ATTEMPTS:
        values.update(status=MailStatus.pending, next_attempt_at=now + backoff(attempts))
    elif outcome == "cancelled":
        values.update(status=MailStatus.cancelled)
    else:
        values.update(status=MailStatus.failed)
    async with db.sessions() as session:
        await session.execute(
            update(MailMessage)
            .where(
                col(MailMessage.id) == message_id,
                col(MailMessage.status) == MailStatus.sending,
                col(MailMessage.attempts) == attempts,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        await session.commit()


# --- composing -----------------------------------------------------------------------------------


@dataclass
class Composed:
    message: EmailMessage
    to: str


async def _compose(
    session: AsyncSession, settings: Settings, keys: KeyRing, mail: MailMessage, *, now: datetime
) -> Composed | str:
    """The email to send now, or the reason it should not be sent any more."""
    if mail.kind in (MailKind.order_tickets, MailKind.order_resend):
        return await _compose_order(session, settings, keys, mail, now=now)
    if mail.kind in (MailKind.guest_ticket, MailKind.ticket_transfer):
        return await _compose_guest(session, settings, keys, mail, now=now)
    if mail.kind == MailKind.order_lookup:
        return await _compose_lookup(session, settings, keys, mail, now=now)
    return f"unknown kind {mail.kind}"


async def _compose_order(
    session: AsyncSession, settings: Settings, keys: KeyRing, mail: MailMessage, *, now: datetime
) -> Composed | str:
    order = await session.get(Order, mail.order_id) if mail.order_id else None
    if order is None or order.status not in PAID_STATUSES:
        return "the order is not paid (any more)"
    tickets = await ticket_service.valid_tickets_of_order(session, order.id)
    if not tickets:
        return "the order has no valid tickets"
    pages = await ticket_service.ticket_pages(session, keys, tickets)
    filename = f"tickets-{order.id}.pdf"
    pdf = await asyncio.to_thread(render.tickets_pdf, pages)
    body = messages.order_tickets(
        buyer_name=order.buyer_name,
        order_id=order.id,
        pages=pages,
        link=order_link(settings, keys, order.id),
        order_page=settings.order_url_template is not None,
        filename=filename,
        again=mail.kind == MailKind.order_resend,
    )
    message = messages.build(
        mail_from=settings.mail_from,
        to=order.buyer_email,
        subject=mail.subject,
        message_id=mail.id,
        body=body,
        now=now,
        attachments=[messages.Attachment(filename=filename, content=pdf)],
    )
    return Composed(message=message, to=order.buyer_email)


async def _compose_guest(
    session: AsyncSession, settings: Settings, keys: KeyRing, mail: MailMessage, *, now: datetime
) -> Composed | str:
    ticket = await session.get(Ticket, mail.ticket_id) if mail.ticket_id else None
    if ticket is None or ticket.status != TicketStatus.valid:
        return "the ticket is void"
    if ticket.version != mail.ticket_version:
        return "the ticket has been reissued since"
    if not ticket.attendee_email:
        return "the ticket has no guest email any more"
    order = await session.get(Order, ticket.order_id)
    if order is None:
        return "no order"
    # The guest's current address: a typo fixed (PATCH) before the message went out is honoured.
    to = ticket.attendee_email
    if mail.kind == MailKind.guest_ticket and to.lower() == order.buyer_email.lower():
        return "the guest is the buyer, who has every ticket already"
    pages = await ticket_service.ticket_pages(session, keys, [ticket])
    filename = f"ticket-{ticket.id}.pdf"
    pdf = await asyncio.to_thread(render.tickets_pdf, pages)
    body = messages.guest_ticket(
        page=pages[0], buyer_name=order.buyer_name, filename=filename, transferred=mail.kind == MailKind.ticket_transfer
    )
    message = messages.build(
        mail_from=settings.mail_from,
        to=to,
        subject=mail.subject,
        message_id=mail.id,
        body=body,
        now=now,
        attachments=[messages.Attachment(filename=filename, content=pdf)],
    )
    return Composed(message=message, to=to)


async def _compose_lookup(
    session: AsyncSession, settings: Settings, keys: KeyRing, mail: MailMessage, *, now: datetime
) -> Composed | str:
    counts = (
        select(col(Ticket.order_id), func.count().label("n"))
        .where(col(Ticket.status) == TicketStatus.valid)
        .group_by(col(Ticket.order_id))
        .subquery()
    )
    rows = (
        await session.execute(
            select(col(Order.id), col(Gala.title), col(Gala.starts_at), col(Gala.timezone), counts.c.n)
            .join(Gala, col(Gala.id) == col(Order.gala_id))
            .join(counts, counts.c.order_id == col(Order.id))
            .where(col(Order.buyer_email) == mail.to_address, col(Order.status).in_(PAID_STATUSES))
            .order_by(col(Order.created_at).desc())
            .limit(LOOKUP_MAX_ORDERS)
        )
    ).all()
    if not rows:
        return "no paid orders for this address"
    orders = [
        messages.OrderSummary(
            order_id=order_id,
            gala_title=title,
            starts_at=starts_at,
            timezone=timezone,
            tickets=n,
            link=order_link(settings, keys, order_id),
        )
        for order_id, title, starts_at, timezone, n in rows
    ]
    message = messages.build(
        mail_from=settings.mail_from,
        to=mail.to_address,
        subject=mail.subject,
        message_id=mail.id,
        body=messages.order_lookup(orders=orders),
        now=now,
    )
    return Composed(message=message, to=mail.to_address)


# --- sending -------------------------------------------------------------------------------------


class _Smtp:
    """One SMTP connection for a run of the job, opened when the first message is ready."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client: aiosmtplib.SMTP | None = None

    async def send(self, message: EmailMessage) -> None:
        if self.client is None or not self.client.is_connected:
            s = self.settings
            client = aiosmtplib.SMTP(
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_username,
                password=s.smtp_password.get_secret_value() if s.smtp_password else None,
                use_tls=s.smtp_port == 465,
                start_tls=s.smtp_starttls and s.smtp_port != 465,
                timeout=SMTP_TIMEOUT,
            )
            await client.connect()
            self.client = client
        await self.client.send_message(message)

    async def close(self) -> None:
        if self.client is not None and self.client.is_connected:
            try:
                await self.client.quit()
            except (aiosmtplib.SMTPException, OSError):
                self.client.close()
        self.client = None


def _classify(exc: BaseException) -> Outcome:
    """Permanent refusals fail at once; everything else is worth another try later."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        return "failed" if codes and all(code >= 500 for code in codes) else "retry"
    if isinstance(exc, aiosmtplib.SMTPResponseException) and not isinstance(exc, aiosmtplib.SMTPConnectError):
        return "failed" if exc.code >= 500 and not isinstance(exc, aiosmtplib.SMTPAuthenticationError) else "retry"
    return "unavailable"  # connection refused, timeout, disconnect: the server, not the message


async def _deliver(
    db: Database, settings: Settings, keys: KeyRing, smtp: _Smtp, message_id: str, attempts: int, *, now: datetime
) -> Outcome:
    try:
        async with db.read_sessions() as session:
            mail = await session.get(MailMessage, message_id)
            if mail is None:
                return "cancelled"
            composed = await _compose(session, settings, keys, mail, now=now)
    except Exception as exc:  # a bug or a database hiccup: keep the message, try later
        # The class name only: a database error's text quotes its parameters, an email address among them.
        log.error(
            "mail %s could not be composed (%s)", message_id, type(exc).__name__, extra={"event": "mail.compose_failed"}
        )
        await _record(db, message_id, attempts, "retry", now=now, error=f"compose: {type(exc).__name__}")
        return "retry"
    if isinstance(composed, str):
        await _record(db, message_id, attempts, "cancelled", now=now, error=composed)
        log.info("mail %s cancelled: %s", message_id, composed, extra={"event": "mail.cancelled"})
        return "cancelled"
    try:
        await smtp.send(composed.message)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        outcome = _classify(exc)
        if outcome == "unavailable":
            await smtp.close()
        # The exception text may quote an address: the log gets the class name only.
        error = f"{type(exc).__name__}: {getattr(exc, 'code', '')}".rstrip(": ")
        await _record(db, message_id, attempts, outcome, now=now, error=error)
        log.warning(
            "mail %s not sent (%s, attempt %d)",
            message_id,
            type(exc).__name__,
            attempts,
            extra={"event": "mail.send_failed", "order_id": mail.order_id},
        )
        return outcome
    await _record(db, message_id, attempts, "sent", now=now, to=composed.to)
    log.info("mail %s sent", message_id, extra={"event": "mail.sent", "order_id": mail.order_id})
    return "sent"


async def send_pending(
    db: Database, settings: Settings, keys: KeyRing, *, now: datetime | None = None, limit: int = 200
) -> int:
    """Send due messages, one claim at a time; returns how many were sent. Without SMTP_HOST the
    mail stays pending (nothing is lost: it goes out once a server is configured). When the server is
    unreachable the run stops after the first failure and the message waits for its backoff."""
    if not settings.smtp_host:
        return 0
    smtp = _Smtp(settings)
    sent = 0
    try:
        for _ in range(limit):
            at = now or utc_now()
            claimed = await _claim_one(db, now=at)
            if claimed is None:
                break
            outcome = await _deliver(db, settings, keys, smtp, *claimed, now=at)
            if outcome == "sent":
                sent += 1
            elif outcome == "unavailable":
                break
    finally:
        await smtp.close()
    return sent

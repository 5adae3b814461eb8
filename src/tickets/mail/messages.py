"""The words of each email, as plain text and HTML. Pure functions: no database, no network.

Everything that comes from a user (names, titles, addresses) is escaped in the HTML part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from html import escape

from tickets.tickets.render import TicketPage, seat_text, when

NAVY = "#1b2640"
GOLD = "#c9a227"


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    maintype: str = "application"
    subtype: str = "pdf"


@dataclass(frozen=True)
class Body:
    text: str
    html: str


@dataclass(frozen=True)
class OrderSummary:
    """One line of an order lookup email."""

    order_id: str
    gala_title: str
    starts_at: datetime
    timezone: str
    tickets: int
    link: str


def build(
    *,
    mail_from: str,
    to: str,
    subject: str,
    message_id: str,
    body: Body,
    now: datetime,
    attachments: Sequence[Attachment] = (),
) -> EmailMessage:
    """A multipart message: text and HTML alternatives, then the attachments."""
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "tickets.invalid"
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(now)
    # The same id on every attempt: a mail system that sees a retry twice can tell it is one message.
    message["Message-ID"] = f"<{message_id}@{domain}>"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body.text)
    message.add_alternative(body.html, subtype="html")
    for attachment in attachments:
        message.add_attachment(
            attachment.content, maintype=attachment.maintype, subtype=attachment.subtype, filename=attachment.filename
        )
    return message


# --- shared pieces ---------------------------------------------------------------------------------


def _event_lines(page: TicketPage) -> list[str]:
    day, hours = when(page.starts_at, page.ends_at, page.timezone)
    lines = [f"{day}, {hours}", page.venue_name]
    if page.venue_address:
        lines.append(page.venue_address)
    return lines


def _ticket_line(page: TicketPage, *, with_name: bool = True) -> str:
    place = seat_text(page)
    line = page.ticket_type + (f", {place}" if place else "")
    return f"{page.attendee_name or 'Name to be confirmed'}: {line}" if with_name else line


def _html(title: str, paragraphs: Sequence[str], *, button: tuple[str, str] | None = None, footer: str = "") -> str:
    """A plain, table-free layout that mail clients render alike. `paragraphs` are HTML already escaped."""
    parts = [
        "<!doctype html>",
        '<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">',
        f"<title>{escape(title)}</title></head>",
        '<body style="margin:0;padding:0;background:#f4f2ec;font-family:Helvetica,Arial,sans-serif;color:#212126">',
        '<div style="max-width:560px;margin:0 auto;padding:24px 16px">',
        f'<div style="background:{NAVY};color:#ffffff;padding:20px 24px;border-radius:8px 8px 0 0;'
        f'border-bottom:3px solid {GOLD}">',
        f'<div style="font-size:11px;letter-spacing:2px;color:{GOLD};font-weight:bold">TICKETS</div>',
        f'<div style="font-size:22px;font-weight:bold;margin-top:6px">{escape(title)}</div></div>',
        '<div style="background:#ffffff;padding:20px 24px;border-radius:0 0 8px 8px;font-size:15px;line-height:1.5">',
    ]
    parts.extend(f'<p style="margin:0 0 14px">{p}</p>' for p in paragraphs)
    if button is not None:
        label, url = button
        parts.append(
            f'<p style="margin:20px 0"><a href="{escape(url, quote=True)}" style="background:{NAVY};color:#ffffff;'
            f'text-decoration:none;padding:12px 20px;border-radius:6px;display:inline-block;font-weight:bold">'
            f"{escape(label)}</a></p>"
        )
    parts.append("</div>")
    if footer:
        parts.append(f'<p style="font-size:12px;color:#6e7078;margin:14px 4px">{footer}</p>')
    parts.append("</div></body></html>")
    return "\n".join(parts)


def _list_html(items: Sequence[str]) -> str:
    return "<br>".join(f"&bull; {escape(item)}" for item in items)


def _lines_html(lines: Sequence[str]) -> str:
    return "<br>".join(escape(line) for line in lines)


PRIVACY = "Keep this email to yourself: the link and the codes give access to your tickets."
PRIVACY_GUEST = "Keep this email to yourself: whoever shows the code first is let in."


# --- the messages ----------------------------------------------------------------------------------


def order_tickets(
    *,
    buyer_name: str,
    order_id: str,
    pages: Sequence[TicketPage],
    link: str,
    order_page: bool,
    filename: str,
    again: bool,
) -> Body:
    """The buyer's tickets: every valid ticket of the order, one page each in the attached PDF."""
    first = pages[0]
    count = len(pages)
    noun = "ticket" if count == 1 else "tickets"
    intro = (
        f"As you asked, here are your {noun} for {first.gala_title} again."
        if again
        else f"Thank you for your order. Your {noun} for {first.gala_title} {'is' if count == 1 else 'are'} attached."
    )
    how = (
        f"The attached file {filename} has one page per guest. Each guest shows their own page at the door, "
        "printed or on a phone."
    )
    # `link` is the frontend's order page (ORDER_URL_TEMPLATE) or, without one, the PDF itself.
    manage = (
        "On your order page you can fill in or change your guests' names and pass a ticket on to someone else."
        if order_page
        else ""
    )
    link_label = "View your order" if order_page else "Download your tickets"
    event = _event_lines(first)
    lines = [_ticket_line(p) for p in pages]
    text = "\n".join(
        [
            f"Hello {buyer_name},",
            "",
            intro,
            how,
            "",
            *event,
            "",
            f"Your {noun}:",
            *[f"- {line}" for line in lines],
            "",
            f"{'Your order' if order_page else 'Your tickets, to download again'}: {link}",
            *([manage] if manage else []),
            "",
            f"Order {order_id}",
            PRIVACY,
            "",
        ]
    )
    html = _html(
        first.gala_title,
        [
            f"Hello {escape(buyer_name)},",
            escape(intro) + " " + escape(how),
            f"<strong>{_lines_html(event[:1])}</strong><br>{_lines_html(event[1:])}",
            f"<strong>Your {noun}</strong><br>{_list_html(lines)}",
            *([escape(manage)] if manage else []),
        ],
        button=(link_label, link),
        footer=f"Order {escape(order_id)}. {escape(PRIVACY)}",
    )
    return Body(text=text, html=html)


def guest_ticket(*, page: TicketPage, buyer_name: str, filename: str, transferred: bool) -> Body:
    """One guest's own ticket. No link to the order: that is the buyer's, with every ticket in it."""
    name = page.attendee_name or "there"
    intro = (
        f"{buyer_name} has passed a ticket for {page.gala_title} on to you: it is attached ({filename}). "
        "Any earlier copy of this ticket no longer works."
        if transferred
        else f"{buyer_name} has a ticket for you for {page.gala_title}: it is attached ({filename})."
    )
    how = "Show it at the door, printed or on your phone. The code admits one guest, once."
    event = _event_lines(page)
    line = _ticket_line(page, with_name=False)
    text = "\n".join([f"Hello {name},", "", intro, how, "", *event, "", f"Your ticket: {line}", "", PRIVACY_GUEST, ""])
    html = _html(
        page.gala_title,
        [
            f"Hello {escape(name)},",
            escape(intro) + " " + escape(how),
            f"<strong>{_lines_html(event[:1])}</strong><br>{_lines_html(event[1:])}",
            f"<strong>Your ticket</strong><br>{escape(line)}",
        ],
        footer=escape(PRIVACY_GUEST),
    )
    return Body(text=text, html=html)


def order_lookup(*, orders: Sequence[OrderSummary]) -> Body:
    """Links to every paid order of an address, newest first."""
    intro = "Someone (we hope you) asked for the ticket orders placed with this email address. Here they are:"
    entries = []
    for o in orders:
        day, hours = when(o.starts_at, None, o.timezone)
        noun = "ticket" if o.tickets == 1 else "tickets"
        entries.append((f"{o.gala_title}, {day}, {hours} ({o.tickets} {noun}, order {o.order_id})", o.link))
    ignore = "If you did not ask, you can ignore this email: nothing has changed."
    text = "\n".join(
        ["Hello,", "", intro, "", *[f"- {label}\n  {link}" for label, link in entries], "", ignore, PRIVACY, ""]
    )
    html = _html(
        "Your ticket orders",
        [
            "Hello,",
            escape(intro),
            "<br>".join(f'&bull; <a href="{escape(link, quote=True)}">{escape(label)}</a>' for label, link in entries),
            escape(ignore),
        ],
        footer=escape(PRIVACY),
    )
    return Body(text=text, html=html)

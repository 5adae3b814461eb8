"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives, for the mail tests."""

from __future__ import annotations

import email
import email.policy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from tests.support import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class Inbox:
    """Every message the server accepted, parsed with the standard library's email package."""

    host: str = "127.0.0.1"
    port: int = 0
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # the hook aiosmtpd calls
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self.lock:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        """The messages delivered to one address (envelope recipient), oldest first."""
        with self.lock:
            return [r.message for r in self.received if address.lower() in (a.lower() for a in r.rcpt_tos)]


@contextmanager
def smtp_server() -> Iterator[Inbox]:
    """An SMTP server on a free loopback port for the duration of the block."""
    inbox = Inbox(port=free_port())
    controller = Controller(inbox, hostname=inbox.host, port=inbox.port)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


def closed_port() -> int:
    """A loopback port with nothing listening: an SMTP server that is down."""
    return free_port()


def attachments(message: EmailMessage) -> dict[str, bytes]:
    """{filename: content} of a parsed message's attachments."""
    out: dict[str, bytes] = {}
    for part in message.iter_attachments():
        assert isinstance(part, EmailMessage)
        name = part.get_filename()
        payload = part.get_content()
        assert name is not None and isinstance(payload, bytes)
        out[name] = payload
    return out


def bodies(message: EmailMessage) -> tuple[str, str]:
    """(plain text, HTML) of a parsed message."""
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    return str(text.get_content()), str(html.get_content())

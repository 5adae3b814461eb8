"""Pure ASGI middleware: request ids, security headers, and checks on request bodies."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tickets.logs import request_id_var
from tickets.problems import PayloadTooLarge, ProblemError, ValidationFailed, problem_from_error

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]

# The door page (tickets.door) runs its own scripts, uses the camera and calls this origin's API only.
DOOR_CSP = (
    b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    b"media-src 'self' blob: mediastream:; connect-src 'self'; worker-src 'self'; manifest-src 'self'; "
    b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class RequestContextMiddleware:
    """Gives every request an id (the caller's `X-Request-ID` if sane), echoed in the response,
    adds security headers, and refuses bodies over `max_body_bytes` (413) and JSON text holding NUL,
    which no database column stores (422 naming each field), before the app reads them."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        content_length = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _VALID_REQUEST_ID.match(candidate):
                    request_id = candidate
            elif name == b"content-length":
                try:
                    content_length = int(value)
                except ValueError:
                    content_length = None
        request_id = request_id or secrets.token_hex(8)
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        is_docs = scope["path"] in ("/docs", "/redoc")
        is_door = scope["path"] == "/door" or scope["path"].startswith("/door/")

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                headers.extend(SECURITY_HEADERS)
                if is_door:
                    headers.append((b"content-security-policy", DOOR_CSP))
                elif not is_docs:
                    headers.append((b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"))
                message["headers"] = headers
            await send(message)

        limit = self.max_body_bytes
        try:
            if content_length is not None and content_length > limit:
                await self._refuse(
                    scope, receive, send_wrapper, PayloadTooLarge(f"The request body exceeds {limit} bytes.")
                )
                return
            if scope["method"] not in ("POST", "PUT", "PATCH"):
                await self.app(scope, receive, send_wrapper)
                return
            # Read the body before the app does (it is capped, so this costs at most `limit` bytes): an
            # oversized body or text that no database can store is answered here, with a clear problem.
            chunks: list[bytes] = []
            received = 0
            more = True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    await self.app(scope, _replay(message, receive), send_wrapper)
                    return
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    await self._refuse(
                        scope, receive, send_wrapper, PayloadTooLarge(f"The request body exceeds {limit} bytes.")
                    )
                    return
                chunks.append(chunk)
                more = message.get("more_body", False)
            body = b"".join(chunks)
            if b"\\u0000" in body:
                where = _nul_locations(body)
                if where is not None:
                    nul = ValidationFailed(
                        "Text may not contain the NUL character (\\u0000).",
                        errors=[{"loc": loc, "msg": "NUL character in text"} for loc in where],
                    )
                    await self._refuse(scope, receive, send_wrapper, nul)
                    return
            await self.app(
                scope, _replay({"type": "http.request", "body": body, "more_body": False}, receive), send_wrapper
            )
        finally:
            request_id_var.reset(token)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, error: ProblemError) -> None:
        """Answer with the problem the app itself would give (same document, same `type`)."""
        await problem_from_error(Request(scope), error)(scope, receive, send)


def _replay(first: Message, receive: Receive) -> Receive:
    """A `receive` that hands the app the message already read (the whole body), then the real ones."""
    pending = [first]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def _nul_locations(body: bytes) -> list[list[str | int]] | None:
    """Where in a JSON body strings (or keys) hold NUL: a list of `loc`s, or None if it is not JSON."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None  # the app answers malformed JSON itself
    found: list[list[str | int]] = []

    def walk(value: Any, loc: list[str | int]) -> None:
        if isinstance(value, str):
            if "\x00" in value:
                found.append(loc)
        elif isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in key:
                    found.append([*loc, key])
                else:
                    walk(item, [*loc, key])
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, [*loc, index])

    walk(doc, ["body"])
    return found or None

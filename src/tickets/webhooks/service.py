"""Outgoing webhooks: endpoints, fan-out of outbox events to deliveries, signed delivery with backoff.

Delivery is at least once. Each POST carries:
- `Tickets-Event-Id`: the event id (`evt_…`), the same on every retry: receivers de-duplicate on it;
- `Tickets-Event-Type`;
- `Tickets-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" with the endpoint's secret>`.
Receivers should check the signature and refuse timestamps older than a few minutes.

Workers claim due deliveries with a lease (`next_attempt_at` pushed forward in the claiming UPDATE), so
several workers never send one attempt twice; a worker that dies mid-send leaves the lease to expire
and the delivery is retried.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from tickets.clock import utc_now
from tickets.config import Settings
from tickets.db import Database
from tickets.ids import new_id
from tickets.keys import KeyRing
from tickets.webhooks.errors import InvalidWebhookUrl, WebhookDeliveryNotFound, WebhookEndpointNotFound
from tickets.webhooks.models import DeliveryStatus, OutboxEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from tickets.webhooks.schemas import WebhookEndpointCreate

log = logging.getLogger("tickets.webhooks")

# Seconds before attempt n+1 (the first retry within 30 s), then the delivery is given up.
BACKOFF = [10, 30, 120, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 24 * 3600]
LEASE = timedelta(seconds=60)
TIMEOUT = 10.0


def endpoint_secret(keys: KeyRing, endpoint_id: str) -> str:
    raw = hmac.new(keys.derive("webhook-endpoint-secrets"), endpoint_id.encode(), hashlib.sha256).digest()
    return "whsec_" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def _is_private(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return not ip.is_global or ip.is_multicast


async def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse URLs that point into our own network (SSRF), unless WEBHOOK_ALLOW_PRIVATE_URLS."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidWebhookUrl(
            "Webhook URLs must be http(s) with a host.", errors=[{"loc": ["body", "url"], "msg": "not http(s)"}]
        )
    if allow_private:
        return
    host = parts.hostname
    try:
        addresses = [host] if _literal_ip(host) else await _resolve(host, parts.port)
    except OSError as exc:
        raise InvalidWebhookUrl(
            f"The host {host} does not resolve.", errors=[{"loc": ["body", "url"], "msg": "unresolvable host"}]
        ) from exc
    if not addresses or any(_is_private(a) for a in addresses):
        raise InvalidWebhookUrl(
            "Private, loopback and link-local addresses are refused (set WEBHOOK_ALLOW_PRIVATE_URLS=true to allow).",
            errors=[{"loc": ["body", "url"], "msg": "private address"}],
        )


def _literal_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


async def _resolve(host: str, port: int | None) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def create_endpoint(
    session: AsyncSession, body: WebhookEndpointCreate, *, settings: Settings, key_id: str, now: datetime
) -> WebhookEndpoint:
    url = str(body.url)
    await check_url(url, allow_private=settings.webhook_allow_private_urls)
    endpoint = WebhookEndpoint(
        id=new_id("whe"),
        url=url,
        events=sorted(set(body.events)),
        gala_id=body.gala_id,
        description=body.description,
        created_by_key_id=key_id,
        created_at=now,
    )
    session.add(endpoint)
    await session.flush()
    return endpoint


async def get_endpoint(session: AsyncSession, endpoint_id: str) -> WebhookEndpoint:
    endpoint = await session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or endpoint.deleted_at is not None:
        raise WebhookEndpointNotFound(f"No webhook endpoint {endpoint_id}.")
    return endpoint


async def get_delivery(session: AsyncSession, delivery_id: str) -> WebhookDelivery:
    delivery = await session.get(WebhookDelivery, delivery_id)
    if delivery is None:
        raise WebhookDeliveryNotFound(f"No webhook delivery {delivery_id}.")
    return delivery


async def replay(session: AsyncSession, delivery_id: str, *, now: datetime) -> WebhookDelivery:
    """Send a delivery again soon, whatever its state (a receiver that was fixed, or lost data)."""
    delivery = await get_delivery(session, delivery_id)
    delivery.status = DeliveryStatus.pending
    delivery.next_attempt_at = now
    session.add(delivery)
    await session.flush()
    return delivery


# --- the worker -----------------------------------------------------------------------------------


async def fan_out(db: Database, *, now: datetime | None = None, batch: int = 200) -> int:
    """Turn new outbox events into one delivery per subscribed endpoint."""
    now = now or utc_now()
    async with db.sessions() as session:
        events = list(
            (
                await session.execute(
                    select(OutboxEvent)
                    .where(col(OutboxEvent.dispatched_at).is_(None))
                    .order_by(col(OutboxEvent.created_at))
                    .limit(batch)
                    .with_for_update(skip_locked=True)
                )
            ).scalars()
        )
        if not events:
            return 0
        endpoints = list(
            (await session.execute(select(WebhookEndpoint).where(col(WebhookEndpoint.deleted_at).is_(None)))).scalars()
        )
        for event in events:
            for endpoint in endpoints:
                if event.type in endpoint.events and endpoint.gala_id in (None, event.gala_id):
                    session.add(
                        WebhookDelivery(
                            id=new_id("whd"),
                            endpoint_id=endpoint.id,
                            event_id=event.id,
                            event_type=event.type,
                            next_attempt_at=now,
                            created_at=now,
                        )
                    )
            event.dispatched_at = now
            session.add(event)
        try:
            await session.commit()
        except IntegrityError:  # another worker fanned the same events out first
            await session.rollback()
            return 0
        return len(events)


async def _claim_due(db: Database, *, now: datetime, batch: int) -> list[WebhookDelivery]:
    async with db.sessions() as session:
        due = (
            select(col(WebhookDelivery.id))
            .where(col(WebhookDelivery.status) == DeliveryStatus.pending, col(WebhookDelivery.next_attempt_at) <= now)
            .order_by(col(WebhookDelivery.next_attempt_at))
            .limit(batch)
            .with_for_update(skip_locked=True)
            .cte("due")
        )
        claimed = list(
            (
                await session.execute(
                    update(WebhookDelivery)
                    .where(col(WebhookDelivery.id) == due.c.id)
                    .values(next_attempt_at=now + LEASE, attempts=col(WebhookDelivery.attempts) + 1)
                    .returning(WebhookDelivery)
                    .execution_options(synchronize_session=False)
                )
            ).scalars()
        )
        await session.commit()
        return claimed


async def deliver_due(
    db: Database, settings: Settings, keys: KeyRing, *, now: datetime | None = None, batch: int = 20
) -> int:
    """Send the deliveries that are due, concurrently; record each attempt and schedule retries."""
    now = now or utc_now()
    claimed = await _claim_due(db, now=now, batch=batch)
    if not claimed:
        return 0
    async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False) as client:
        await asyncio.gather(*(_send(db, settings, keys, client, d) for d in claimed))
    return len(claimed)


async def _send(
    db: Database, settings: Settings, keys: KeyRing, client: httpx.AsyncClient, delivery: WebhookDelivery
) -> None:
    async with db.read_sessions() as s:
        event = await s.get(OutboxEvent, delivery.event_id)
        endpoint = await s.get(WebhookEndpoint, delivery.endpoint_id)
    status_code: int | None = None
    error: str | None = None
    started = time.monotonic()
    if event is None or endpoint is None or endpoint.deleted_at is not None:
        error = "endpoint deleted"
    else:
        body = json.dumps(
            {
                "id": event.id,
                "type": event.type,
                "created_at": event.created_at.isoformat(),
                "gala_id": event.gala_id,
                "data": event.data,
            },
            separators=(",", ":"),
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "tickets-webhooks/1",
            "Tickets-Event-Id": event.id,
            "Tickets-Event-Type": event.type,
            "Tickets-Signature": sign(endpoint_secret(keys, endpoint.id), body, int(time.time())),
        }
        try:
            await check_url(endpoint.url, allow_private=settings.webhook_allow_private_urls)  # DNS may have changed
            response = await client.post(endpoint.url, content=body, headers=headers)
            status_code = response.status_code
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
        except InvalidWebhookUrl as exc:
            error = exc.detail[:500]
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
    elapsed = int((time.monotonic() - started) * 1000)
    now = utc_now()
    async with db.sessions() as session:
        row = await session.get(WebhookDelivery, delivery.id, with_for_update=True)
        if row is None:
            return
        session.add(
            WebhookAttempt(
                id=new_id("wha"),
                delivery_id=row.id,
                attempt=row.attempts,
                status_code=status_code,
                error=error,
                duration_ms=elapsed,
                attempted_at=now,
            )
        )
        row.last_status_code = status_code
        row.last_error = error
        if error is None:
            row.status = DeliveryStatus.succeeded
            row.delivered_at = now
            row.next_attempt_at = None
        elif endpoint is None or (endpoint.deleted_at is not None) or row.attempts > len(BACKOFF):
            row.status = DeliveryStatus.failed
            row.next_attempt_at = None
        else:
            row.next_attempt_at = now + timedelta(seconds=BACKOFF[row.attempts - 1])
        session.add(row)
        await session.commit()
    if error:
        log.warning(
            "webhook delivery %s attempt %d failed: %s",
            delivery.id,
            delivery.attempts,
            error,
            extra={"event": "webhooks.delivery_failed"},
        )


async def run_once(db: Database, settings: Settings, keys: KeyRing) -> int:
    fanned = await fan_out(db)
    sent = await deliver_due(db, settings, keys)
    return fanned + sent

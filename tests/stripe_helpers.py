"""Playing the buyer's side of Stripe against the local stand-in, and signing events as Stripe does."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

import httpx
import stripe

from tests.conftest import WEBHOOK_SECRET

VISA = "pm_card_visa"
DECLINE = "4000000000000341"
THREE_D_SECURE = "4000002500003155"


def stripe_client(base: str) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_tickets", base_addresses={"api": base}, max_network_retries=0)


def card(base: str, number: str) -> str:
    pm = stripe_client(base).v1.payment_methods.create(
        params={"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"}}
    )
    return str(pm["id"])


def pay(base: str, intent_id: str, payment_method: str = VISA) -> Any:
    """What Stripe.js does for the buyer: attach a card and confirm."""
    client = stripe_client(base)
    client.v1.payment_intents.update(intent_id, params={"payment_method": payment_method})
    return client.v1.payment_intents.confirm(intent_id)


def authenticate(base: str, intent_id: str, client_secret: str, *, success: bool = True) -> None:
    """The customer's answer to the 3-D Secure challenge (a stand-in-only route)."""
    r = httpx.post(
        f"{base}/v1/payment_intents/{intent_id}/_authenticate",
        data={"client_secret": client_secret, "success": "true" if success else "false"},
        headers={"Authorization": "Bearer sk_test_tickets"},
    )
    r.raise_for_status()


def sign(payload: bytes, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def event(event_type: str, obj: dict[str, Any], *, event_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": event_id or f"evt_{secrets.token_hex(8)}",
            "object": "event",
            "type": event_type,
            "created": int(time.time()),
            "data": {"object": obj},
        }
    ).encode()


def intent_object(order: dict[str, Any], status: str = "succeeded") -> dict[str, Any]:
    return {
        "id": order["payment"]["payment_intent_id"],
        "object": "payment_intent",
        "status": status,
        "amount": order["total_amount"],
        "currency": order["currency"].lower(),
        "metadata": {"order_id": order["id"], "gala_id": order["gala_id"]},
    }

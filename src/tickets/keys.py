"""Keys derived from the master secret (SECRET_KEY), each for one purpose (HKDF-SHA256)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def _derive(master: bytes, purpose: str, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=b"tickets/v1", info=purpose.encode()).derive(master)


@dataclass
class KeyRing:
    master: bytes = field(repr=False)

    def __post_init__(self) -> None:
        self.order_token_key = _derive(self.master, "order-access-token")

    def derive(self, purpose: str, length: int = 32) -> bytes:
        return _derive(self.master, purpose, length)

    def order_access_token(self, order_id: str) -> str:
        """The buyer's token for one order: derived, so it can be put in any later email."""
        digest = hmac.new(self.order_token_key, order_id.encode(), hashlib.sha256).digest()
        return "otk_" + base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")

    def check_order_token(self, order_id: str, token: str | None) -> bool:
        if not token:
            return False
        return hmac.compare_digest(self.order_access_token(order_id).encode(), token.encode())

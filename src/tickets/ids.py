"""Opaque identifiers: a short prefix naming the kind, then 20 random base-62 characters."""

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


_LENGTH = 20
_UNBIASED = 248  # 4 * 62: bytes below it map uniformly onto the alphabet; the few above are skipped


def new_id(prefix: str) -> str:
    """A new id such as `gal_4fQ9...`: about 119 bits of randomness, never sequential."""
    # One read of the system's randomness per id, not one per character (an order makes several ids).
    chars: list[str] = []
    while len(chars) < _LENGTH:
        chars += [_ALPHABET[b % 62] for b in secrets.token_bytes(_LENGTH + 4) if b < _UNBIASED]
    return prefix + "_" + "".join(chars[:_LENGTH])

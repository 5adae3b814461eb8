"""Opaque identifiers: a short prefix naming the kind, then 20 random base-62 characters."""

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    """A new id such as `gal_4fQ9...`: about 119 bits of randomness, never sequential."""
    return prefix + "_" + "".join(secrets.choice(_ALPHABET) for _ in range(20))

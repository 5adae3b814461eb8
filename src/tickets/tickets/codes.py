"""Ticket codes: the exact text in a ticket's QR code, signed so that a scanner can check it offline.

Format, version 1 (107 bytes before encoding):

    offset  size  field
    0       1     format version, 0x01
    1       20    ticket id without its `tkt_` prefix (ASCII base-62)
    21      20    gala id without its `gal_` prefix (ASCII base-62)
    41      2     ticket version, unsigned big-endian (a transfer increments it)
    43      64    Ed25519 signature over bytes 0..42 with the gala's signing key

The 107 bytes are encoded as RFC 4648 base32, upper case, without padding: 172 characters, all in
the QR alphanumeric alphabet, so the code fits a QR code of version 10 at error correction M
(capacity 311 alphanumeric characters). The encoding is canonical: a string whose decoding does not
re-encode to the very same string (lower case, padding, stray bits in the last character) is invalid.

Each gala has its own Ed25519 key pair, derived from the server's SECRET_KEY with HKDF (the private
key is never stored or sent). Scanners get the public key from the scan-sync bundle and can verify a
code with no connection. A signature only proves the server issued that (ticket, version) once; a
ticket voided or transferred later still carries a valid signature, which is why the sync bundle
also lists every ticket's current version and status (the revocation list).
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError

from tickets.keys import KeyRing

FORMAT_VERSION = 1
_ID_LEN = 20
_BODY = struct.Struct(f">B{_ID_LEN}s{_ID_LEN}sH")
_SIG_LEN = 64
CODE_BYTES = _BODY.size + _SIG_LEN


@dataclass(frozen=True)
class CodePayload:
    ticket_id: str
    gala_id: str
    version: int


class MalformedCode(ValueError):
    """The text is not a ticket code of a known format."""


def signing_key(keys: KeyRing, gala_id: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(keys.derive(f"gala-signing-key:{gala_id}"))


def public_key(keys: KeyRing, gala_id: str) -> bytes:
    """The gala's Ed25519 public key, its 32 raw bytes."""
    return signing_key(keys, gala_id).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _strip(prefix: str, value: str) -> bytes:
    if not value.startswith(prefix) or len(value) != len(prefix) + _ID_LEN:
        raise ValueError(f"not a {prefix} id of the expected length: {value}")
    return value[len(prefix) :].encode("ascii")


def encode(keys: KeyRing, payload: CodePayload) -> str:
    body = _BODY.pack(
        FORMAT_VERSION, _strip("tkt_", payload.ticket_id), _strip("gal_", payload.gala_id), payload.version
    )
    signature = signing_key(keys, payload.gala_id).sign(body)
    return base64.b32encode(body + signature).decode("ascii").rstrip("=")


# A canonical code is exactly this many base32 characters, and the last one carries this many bits past
# the data, all zero.
_CODE_CHARS = -(-CODE_BYTES * 8 // 5)
_STRAY_BITS = _CODE_CHARS * 5 - CODE_BYTES * 8
# Base32 read as one number: each letter of the RFC 4648 alphabet becomes the digit of the same value in
# int(..., 32)'s alphabet, and every other ASCII character a "!", which int() refuses (so neither "0",
# "1", "8", "9", lower case, padding, "_", signs nor spaces get through). The standard library's
# base32 decoder is Python, 25 times slower for a code: this is on the door's every scan.
_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_AS_DIGITS = str.maketrans(
    {chr(c): "!" for c in range(128)} | dict(zip(_BASE32, "0123456789abcdefghijklmnopqrstuv", strict=True))
)


def parse(code: str) -> tuple[CodePayload, bytes, bytes]:
    """Split a code into its payload, signed bytes and signature, checking the canonical form."""
    if len(code) != _CODE_CHARS or not code.isascii():  # (int() would read non-ASCII digits)
        raise MalformedCode("not a ticket code")
    try:
        number = int(code.translate(_AS_DIGITS), 32)
    except ValueError as exc:
        raise MalformedCode("not base32") from exc
    if number & ((1 << _STRAY_BITS) - 1):
        raise MalformedCode("not in canonical form")
    raw = (number >> _STRAY_BITS).to_bytes(CODE_BYTES, "big")
    body, signature = raw[: _BODY.size], raw[_BODY.size :]
    version_byte, ticket_part, gala_part, version = _BODY.unpack(body)
    if version_byte != FORMAT_VERSION or not ticket_part.isalnum() or not gala_part.isalnum():
        raise MalformedCode("unknown code format")
    payload = CodePayload(ticket_id="tkt_" + ticket_part.decode(), gala_id="gal_" + gala_part.decode(), version=version)
    return payload, body, signature


def verify(public_key: bytes, body: bytes, signature: bytes) -> bool:
    """Whether `signature` is the gala's Ed25519 signature of `body` (`public_key`: its 32 raw bytes).

    Verified by libsodium, which takes about half the CPU of OpenSSL's Ed25519 (`bench/verify.py`: a
    median of 93 µs against 163 on the benchmark machine): this is on the door's every scan. Signing
    stays with `cryptography`; the tests check the codes with it too, so two implementations agree on
    every signature."""
    try:
        crypto_sign_open(signature + body, public_key)
    except BadSignatureError:
        return False
    return True

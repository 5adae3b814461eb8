"""Ed25519 verification of a ticket code: libsodium (what the door uses, `codes.verify`) against OpenSSL
(through `cryptography`, what it used before), alternated in one process so that both see the same
machine.

    .venv/bin/python bench/verify.py [--runs 15] [--per-run 500]

Prints the microseconds per verification of each: median and best of the runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from tickets.keys import KeyRing
from tickets.tickets import codes


def main(runs: int, per_run: int) -> None:
    keys = KeyRing(bytes(range(32)))
    gala_id = "gal_" + "b" * 20
    code = codes.encode(keys, codes.CodePayload(ticket_id="tkt_" + "a" * 20, gala_id=gala_id, version=1))
    _, body, signature = codes.parse(code)
    raw = codes.public_key(keys, gala_id)
    openssl_key = codes.signing_key(keys, gala_id).public_key()

    def libsodium() -> None:
        if not codes.verify(raw, body, signature):
            raise AssertionError("libsodium refused a good signature")

    def openssl() -> None:
        openssl_key.verify(signature, body)  # raises InvalidSignature when it does not verify

    checks: dict[str, Callable[[], None]] = {"libsodium (codes.verify)": libsodium, "OpenSSL (cryptography)": openssl}
    timings: dict[str, list[float]] = {name: [] for name in checks}
    for _ in range(runs):
        for name, check in checks.items():
            start = time.perf_counter()
            for _ in range(per_run):
                check()
            timings[name].append((time.perf_counter() - start) / per_run * 1e6)
    for name, values in timings.items():
        print(f"{name:26s} median {statistics.median(values):6.1f} us, best {min(values):6.1f} us per verification")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--per-run", type=int, default=500)
    args = parser.parse_args()
    main(args.runs, args.per_run)

"""One listening socket per worker process, so that the kernel spreads connections evenly.

uvicorn's workers all accept from one socket that the parent binds. Whichever worker wakes first takes
every connection waiting, so a burst of clients can land almost entirely on one process: in the
benchmarks, 54 of 64 buyers' keep-alive connections on one worker, or 15 of 16 door scanners, with the
other worker nearly idle. With `SO_REUSEPORT` each worker listens on a socket of its own, bound to the
same address, and the kernel picks the socket for each new connection by a hash of its addresses and
ports, which spreads them evenly on average whatever the workers are doing.

The parent process hands uvicorn's supervisor a placeholder instead of a bound socket: it travels to
each spawned worker by pickling, and unpickles there as a fresh socket with `SO_REUSEPORT`. A worker
started again after a crash gets a socket of its own the same way.
"""

from __future__ import annotations

import errno
import socket
from typing import Any


def reuse_port_available() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def bind_reuse_port(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) with SO_REUSEPORT, not yet listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class PerWorkerSocket:
    """Stands in, in the parent, for the socket that each worker binds for itself when it starts."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def check(self) -> None:
        """Fail now, in the parent, if the address is taken or cannot be bound, rather than in every
        worker in turn. SO_REUSEPORT would let a second server of the same user listen beside a first
        one and take half its connections, so anything answering there already counts as taken. The
        bind probe never listens, so it takes no connection."""
        probe = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        try:
            socket.create_connection((probe, self.port), timeout=1).close()
        except OSError:
            pass  # nobody answers: free, or not ours to reach, which the bind below tells
        else:
            raise OSError(errno.EADDRINUSE, "something is already listening there")
        bind_reuse_port(self.host, self.port).close()

    def __reduce__(self) -> tuple[Any, ...]:
        return (bind_reuse_port, (self.host, self.port))

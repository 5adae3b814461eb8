"""`tickets serve --workers N`: each worker listens on a socket of its own (SO_REUSEPORT), the kernel
spreads new connections over them, and a second server cannot slip in beside a running one. (Linux:
the sockets are read from /proc.)"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import TEST_SECRET
from tests.support import live_server, scratch_database
from tickets.migrate import upgrade_to_head


def _sockets(port: int, state: str) -> set[str]:
    """Inodes of the TCP sockets on local `port` in `state` ("0A" listening, "01" established)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == state:
                inodes.add(cols[9])
    return inodes


def _owners(inodes: set[str]) -> dict[str, int]:
    """Which process holds each of `inodes` (this user's processes; the server is our child)."""
    owners = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    owners[link[8:-1]] = int(pid)
        except OSError:
            continue
    return owners


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    with scratch_database(os.environ.get("TEST_DATABASE_URL"), tmp_path) as url:
        upgrade_to_head(url)
        yield {"DATABASE_URL": url, "SECRET_KEY": TEST_SECRET, "DATA_DIR": str(tmp_path)}


def test_each_worker_listens_on_its_own_socket_and_takes_connections(env: dict[str, str], tmp_path: Path) -> None:
    with live_server(env, workers=2, cwd=tmp_path) as base:
        port = urlsplit(base).port
        assert port is not None
        deadline = time.monotonic() + 30  # /readyz answered from the first worker up; wait for the second
        while len(listeners := _owners(_sockets(port, "0A"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(listeners) == 2 and len(set(listeners.values())) == 2  # two sockets, one per process

        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
        try:
            for c in clients:
                c.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            for c in clients:
                assert c.recv(4096).startswith(b"HTTP/1.1 200 ")
            held = Counter(_owners(_sockets(port, "01")).values())
        finally:
            for c in clients:
                c.close()
    # The kernel hashes each connection's addresses and ports to one of the sockets: with 40, both
    # workers get some (all on one would happen once in 2**39 runs).
    assert set(held) == set(listeners.values()), held
    assert sum(held.values()) == 40


def test_a_second_server_cannot_start_on_a_taken_port(env: dict[str, str], tmp_path: Path) -> None:
    with live_server(env, workers=2, cwd=tmp_path) as base:
        port = str(urlsplit(base).port)
        second = subprocess.run(
            [sys.executable, "-m", "tickets.cli", "serve", "--port", port, "--workers", "2"],
            env={**os.environ, **env},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert "already listening" in second.stderr + second.stdout
        listening = _sockets(int(port), "0A")
    assert len(listening) <= 2  # the first server's (its second worker may still be starting), no third


def test_one_shared_socket_when_turned_off(env: dict[str, str], tmp_path: Path) -> None:
    with live_server({**env, "LISTEN_PER_WORKER": "false"}, workers=2, cwd=tmp_path) as base:
        port = urlsplit(base).port
        assert port is not None
        assert len(_sockets(port, "0A")) == 1

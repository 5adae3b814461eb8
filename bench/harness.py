"""What every benchmark shares: a scratch PostgreSQL database, the service as deployed
(`tickets serve --workers N`), an admin key from `tickets create-api-key`, the cheap load generator
in its own process, and CPU accounting per process tree read from /proc before and after each load.

Run by hand, never in CI (see docs/BENCHMARKS.md). Everything listens on and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV_BIN = Path(sys.executable).parent
PG_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")
SECRET_KEY = "bench-secret-key-not-for-production-0123456789abcdef"
CLK_TCK = os.sysconf("SC_CLK_TCK")
_BACKEND = re.compile(r"\d+\.\d+\.\d+\.\d+\(\d+\)|\[local\]")  # a client backend: host(port)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- CPU accounting ----------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and of its reaped children)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    ppid = int(fields[1])
    ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ppid, ticks / CLK_TCK


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def tree(root: int) -> list[int]:
    """The process and all its descendants."""
    parents: dict[int, list[int]] = {}
    for pid in _all_pids():
        st = _stat(pid)
        if st is not None:
            parents.setdefault(st[0], []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    return sum(st[1] for st in (_stat(p) for p in pids) if st is not None)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def postmaster_pid() -> int | None:
    with psycopg.connect(f"{PG_URL}/postgres") as conn:
        data_dir = conn.execute("SHOW data_directory").fetchone()[0]  # type: ignore[index]
    try:
        return int(Path(data_dir, "postmaster.pid").read_text().split()[0])
    except OSError:
        return None


def machine_busy() -> float:
    """CPU seconds the whole machine spent not idle (all cores)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / CLK_TCK


def wait_quiet(timeout: float, *, busy_below: float = 0.25, window: float = 3.0) -> float:
    """Wait (up to `timeout` s) until the machine is mostly idle: less than `busy_below` of all cores
    busy over `window` s. Other work on a 2-core machine skews every figure; returns the busy share
    last seen (the report prints the CPU of other processes during each load anyway)."""
    if timeout <= 0:
        return 0.0
    deadline = time.monotonic() + timeout
    cores = os.cpu_count() or 1
    while True:
        before = machine_busy()
        time.sleep(window)
        share = (machine_busy() - before) / (window * cores)
        if share < busy_below or time.monotonic() >= deadline:
            if timeout:
                print(f"  (machine {share:.0%} busy before this load)", flush=True)
            return share


@dataclass
class CpuSnapshot:
    server: float
    postgres_db: float
    postgres_shared: float
    machine: float


def snapshot(server_pid: int | None, dbname: str) -> CpuSnapshot:
    """CPU so far of the server tree, of this database's PostgreSQL backends (and autovacuum of it),
    of PostgreSQL's shared background processes (WAL writer, checkpointer, ...) and of the machine."""
    server = cpu_seconds(tree(server_pid)) if server_pid else 0.0
    db = shared = 0.0
    pm = postmaster_pid()
    if pm is not None:
        for pid in tree(pm):
            if pid == pm:
                continue
            cmd = _cmdline(pid)
            st = _stat(pid)
            if st is None:
                continue
            if f" {dbname} " in cmd:
                db += st[1]  # this database's backends (and its autovacuum workers)
            elif not _BACKEND.search(cmd):
                shared += st[1]  # WAL writer, checkpointer, background writer, launchers
    return CpuSnapshot(server=server, postgres_db=db, postgres_shared=shared, machine=machine_busy())


# --- scratch database and server -------------------------------------------------------------------


@contextlib.contextmanager
def scratch_database(tag: str = "") -> Iterator[tuple[str, str]]:
    """A fresh PostgreSQL database `tickets_bench_<random>`, dropped afterwards: (url, name)."""
    name = f"tickets_bench_{tag}{secrets.token_hex(3)}"
    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_URL}/{name}", name
    finally:
        with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def server_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "SMTP_", "RATE_LIMIT_"))}
    env.update(
        DATABASE_URL=database_url,
        SECRET_KEY=SECRET_KEY,
        DATA_DIR=str(data_dir),
        ACCESS_LOG="false",
        LOG_LEVEL="warning",
        RATE_LIMIT_SCANS="0",  # the door rush scans from one key far faster than any real door
    )
    if os.environ.get("BENCH_SRC"):  # another copy of the source (before/after comparisons)
        env["PYTHONPATH"] = os.environ["BENCH_SRC"]
    env.update(extra)
    return env


def create_api_key(env: dict[str, str], *, role: str = "admin", name: str = "bench admin") -> str:
    out = subprocess.run(
        [str(VENV_BIN / "tickets"), "create-api-key", "--role", role, "--name", name],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=env["DATA_DIR"],
    )
    return out.stdout.strip().splitlines()[-1]


def tickets_check(env: dict[str, str]) -> tuple[int, str]:
    out = subprocess.run(
        [str(VENV_BIN / "tickets"), "check"], capture_output=True, text=True, env=env, cwd=env["DATA_DIR"]
    )
    return out.returncode, (out.stdout + out.stderr).strip()


@dataclass
class Server:
    base: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def workers(self) -> list[int]:
        """The uvicorn worker processes (spawned by multiprocessing; not its resource tracker)."""
        return [p for p in tree(self.pid) if p != self.pid and "spawn_main" in _cmdline(p)]


@contextlib.contextmanager
def serve(env: dict[str, str], *, workers: int = 2) -> Iterator[Server]:
    """`tickets serve --workers N` as deployed; yields once /readyz answers."""
    port = free_port()
    log_path = Path(env["DATA_DIR"]) / f"server-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(VENV_BIN / "tickets"), "serve", "--port", str(port), "--workers", str(workers)],
            env=env,
            cwd=env["DATA_DIR"],
            stdout=log,
            stderr=log,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become ready")
            time.sleep(0.2)
        # every worker must be up (each answers /readyz once its pool works)
        time.sleep(1.0)
        yield Server(base=base, port=port, proc=proc, log_path=log_path)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def deployed(
    database_url: str, data_dir: Path, *, workers: int, **extra: str
) -> Iterator[tuple[dict[str, str], Server, Api]]:
    """The service as deployed on `database_url`: migrated, an admin key made, `tickets serve --workers N`
    running. Yields its environment, the server and an admin client."""
    env = server_env(database_url, data_dir, **extra)
    subprocess.run([str(VENV_BIN / "tickets"), "migrate"], env=env, cwd=data_dir, check=True)
    key = create_api_key(env)
    with serve(env, workers=workers) as server:
        yield env, server, Api(server.base, key)


def server_errors(server: Server) -> list[str]:
    return [line for line in server.log_path.read_text(errors="replace").splitlines() if '"level": "error"' in line]


# --- the load ------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    wall: float
    statuses: list[int]
    latencies: list[float]
    bodies: list[str | None]
    cpu_server: float
    cpu_pg_db: float
    cpu_pg_shared: float
    cpu_client: float
    cpu_machine: float
    cpu_extra: dict[str, float] = field(default_factory=dict)
    split: list[int] = field(default_factory=list)  # client connections held by each worker

    @property
    def count(self) -> int:
        return len(self.statuses)

    @property
    def rate(self) -> float:
        return self.count / self.wall

    def pct(self, q: float, statuses: set[int] | None = None) -> float:
        lat = sorted(lat for s, lat in zip(self.statuses, self.latencies, strict=True) if not statuses or s in statuses)
        if not lat:
            return float("nan")
        return lat[min(len(lat) - 1, int(q / 100 * len(lat)))]

    @property
    def p50_ms(self) -> float:
        return self.pct(50) * 1000

    @property
    def p99_ms(self) -> float:
        return self.pct(99) * 1000

    @property
    def errors_5xx(self) -> int:
        return sum(1 for s in self.statuses if s >= 500 or s == 0)

    def json_bodies(self) -> list[dict[str, Any]]:
        return [json.loads(b) if b else {} for b in self.bodies]

    def cpu_line(self) -> str:
        other = self.cpu_machine - self.cpu_server - self.cpu_pg_db - self.cpu_pg_shared - self.cpu_client
        other -= sum(self.cpu_extra.values())
        extra = "".join(f", {k} {v:.2f}" for k, v in self.cpu_extra.items())
        return (
            f"CPU s: server {self.cpu_server:.2f}, postgres {self.cpu_pg_db:.2f} (+{self.cpu_pg_shared:.2f} shared), "
            f"client {self.cpu_client:.2f}{extra}; machine {self.cpu_machine:.2f} of {2 * self.wall:.2f} "
            f"(other {max(other, 0):.2f}); connections per worker {'/'.join(map(str, self.split))}"
        )

    def per_request_ms(self) -> dict[str, float]:
        n = self.count
        return {
            "server": 1000 * self.cpu_server / n,
            "postgres": 1000 * (self.cpu_pg_db + self.cpu_pg_shared) / n,
            "client": 1000 * self.cpu_client / n,
        }


def tcp_sockets(port: int, state: str) -> set[str]:
    """Inodes of the TCP sockets on local `port` in `state` ("0A" listening, "01" established)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == state:
                    inodes.add(cols[9])
    return inodes


def connections_per_worker(server: Server) -> list[int]:
    """How many established client connections each worker holds (from /proc/net/tcp and the workers'
    file descriptors): the kernel decides the split when it hands out new connections."""
    inodes = tcp_sockets(server.port, "01")
    counts = []
    for pid in server.workers():
        n = 0
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        n += 1
        counts.append(n)
    return counts


def run_load(
    server: Server,
    dbname: str,
    requests: list[dict[str, Any]],
    *,
    connections: int,
    keep_bodies: bool = True,
    extra_pids: dict[str, int] | None = None,
    profile_dir: Path | None = None,
) -> LoadResult:
    """Send `requests` over `connections` keep-alive connections from a separate client process.
    With `profile_dir`, py-spy samples every worker during the load (collapsed stacks, one file each)."""
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        job_path, out_path = Path(tmp, "job.json"), Path(tmp, "out.json")
        job_path.write_text(
            json.dumps(
                {
                    "host": "127.0.0.1",
                    "port": server.port,
                    "connections": connections,
                    "requests": requests,
                    "keep_bodies": keep_bodies,
                    "wait_for_go": True,
                }
            )
        )
        client = subprocess.Popen(
            [sys.executable, str(BENCH / "httpload.py"), str(job_path), str(out_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert client.stdout is not None and client.stdin is not None
        line = client.stdout.readline()
        if line.strip() != "READY":
            client.kill()
            raise RuntimeError(f"load client failed to start: {line!r}")
        deadline = time.monotonic() + 2  # the workers accept a moment after the client has connected
        while sum(split := connections_per_worker(server)) < connections and time.monotonic() < deadline:
            time.sleep(0.02)
        spies = start_profiles(server, profile_dir) if profile_dir else []
        before = snapshot(server.pid, dbname)
        extra_before = {k: cpu_seconds(tree(p)) for k, p in (extra_pids or {}).items()}
        client.stdin.write("go\n")
        client.stdin.flush()
        line = client.stdout.readline()
        after = snapshot(server.pid, dbname)
        extra_after = {k: cpu_seconds(tree(p)) for k, p in (extra_pids or {}).items()}
        stop_profiles(spies)
        client.wait(timeout=60)
        if line.strip() != "DONE":
            raise RuntimeError(f"load client failed: {line!r}")
        out = json.loads(out_path.read_text())
    results = out["results"]
    return LoadResult(
        wall=out["wall"],
        statuses=[r[0] for r in results],
        latencies=[r[1] for r in results],
        bodies=[r[2] for r in results],
        cpu_server=after.server - before.server,
        cpu_pg_db=after.postgres_db - before.postgres_db,
        cpu_pg_shared=after.postgres_shared - before.postgres_shared,
        cpu_client=out["cpu"],
        cpu_machine=after.machine - before.machine,
        cpu_extra={k: extra_after[k] - extra_before[k] for k in extra_before},
        split=split,
    )


# --- profiles ------------------------------------------------------------------------------------


def start_profiles(server: Server, out_dir: Path) -> list[subprocess.Popen[bytes]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    spies = []
    for pid in server.workers():
        spies.append(
            subprocess.Popen(
                [
                    str(VENV_BIN / "py-spy"),
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    *(["--native"] if os.environ.get("BENCH_PROFILE_NATIVE") else ["--nonblocking"]),
                    "--output",
                    str(out_dir / f"worker-{pid}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    time.sleep(1.0)  # let py-spy attach
    return spies


def stop_profiles(spies: list[subprocess.Popen[bytes]]) -> None:
    for spy in spies:
        spy.send_signal(signal.SIGINT)
    for spy in spies:
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()


def summarise_profiles(out_dir: Path, top: int = 40) -> str:
    """Where the workers' time went: the functions with most samples on the stack (inclusive) and at
    the top of it (self), summed over every worker's collapsed stacks."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = idle = 0
    for path in out_dir.glob("worker-*.txt"):
        for line in path.read_text().splitlines():
            stack, _, count_s = line.rpartition(" ")
            if not stack:
                continue
            count = int(count_s)
            frames = stack.split(";")
            total += count
            if "select (selectors.py" in frames[-1] or "run_forever" in frames[-1] or "run (uvloop" in frames[-1]:
                idle += count
            for frame in set(frames):
                inclusive[frame] = inclusive.get(frame, 0) + count
            own[frames[-1]] = own.get(frames[-1], 0) + count
    if not total:
        return "no samples"
    packages: dict[str, int] = {}
    for frame, n in own.items():
        m = re.search(r"\(([\w.]+)/", frame)
        pkg = m.group(1) if m else frame.split(" (")[-1].rstrip(")").split(":")[0]
        packages[pkg] = packages.get(pkg, 0) + n
    lines = [f"{total} samples ({idle} idle in the event loop)", "", "self % by package"]
    for pkg, n in sorted(packages.items(), key=lambda kv: -kv[1])[:15]:
        lines.append(f"{100 * n / total:6.1f}  {pkg}")
    lines += ["", "inclusive %  self %  function (ours: tickets/)"]
    ours = [(f, n) for f, n in inclusive.items() if "(tickets/" in f]
    for frame, n in sorted(ours, key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * n / total:10.1f}  {100 * own.get(frame, 0) / total:6.1f}  {frame[:150]}")
    lines += ["", "self %  function (top of the stack)"]
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * n / total:6.1f}  {frame[:150]}")
    return "\n".join(lines)


# --- setup through the API -------------------------------------------------------------------------


class Api:
    """A small synchronous client for setting data up (not measured)."""

    def __init__(self, base: str, key: str | None = None) -> None:
        self.key = key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=base, headers=headers, timeout=120)

    def call(self, method: str, path: str, expect: int = 200, **kw: Any) -> Any:
        r = self.http.request(method, path, **kw)
        if r.status_code != expect:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:2000]}")
        return r.json()

    def post(self, path: str, body: Any = None, expect: int = 201, **kw: Any) -> Any:
        return self.call("POST", path, expect=expect, json=body, **kw)

    def get(self, path: str, **kw: Any) -> Any:
        return self.call("GET", path, **kw)

    def gala(self, title: str, **extra: Any) -> dict[str, Any]:
        body = {
            "title": title,
            "venue_name": "Bench Hall",
            "starts_at": "2031-06-01T19:00:00Z",
            "timezone": "America/Toronto",
            **extra,
        }
        return dict(self.post("/v1/galas", body))

    def publish(self, gala_id: str) -> None:
        self.post(f"/v1/galas/{gala_id}/publish", expect=200)


def environment() -> dict[str, str]:
    """The machine, for the report."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "?",
    )
    mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in line))
    with psycopg.connect(f"{PG_URL}/postgres") as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        sync = conn.execute("SHOW synchronous_commit").fetchone()[0]  # type: ignore[index]
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "postgresql": pg,
        "synchronous_commit": sync,
        "python": sys.version.split()[0],
        "loadavg": Path("/proc/loadavg").read_text().split()[0],
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")

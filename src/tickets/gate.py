"""At most a few of a worker's order and scan requests are worked on at once; the others wait their
turn, first come, first served (`HOT_PATH_CONCURRENCY`, per worker process).

An asyncio worker runs every request it has accepted concurrently: each advances a step (a database
round trip) at a time among all the others. In a rush of 32 requests per worker, a sale that needs
several round trips thus finishes only when nearly the whole wave has, and every buyer of the wave waits
as long as the slowest one. Worked on a few at a time, requests finish in about the order they came: the
same throughput (a little more, with fewer transactions contending in the database), and a p99 latency
at about twice the median instead of several times it (see docs/BENCHMARKS.md). A few at a time still
overlap one request's database round trip with another's Python work.

A request that goes on to wait on something other than this process and its database (a call to Stripe)
leaves the gate first (`leave_gate`), so that a slow payment provider does not hold up the door. When
the answer comes back, the request goes in again at the head of the line (`back_through_gate`): it
has waited its turn once, and the rest of its work is a couple of short writes, which would otherwise
run among all the requests inside and stretch every one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

# (method, path) of the routes behind the gate: the ones a sell-out or a door rush calls.
HOT_ROUTES = frozenset(
    {
        ("POST", "/v1/orders"),
        ("POST", "/v1/comp-orders"),
        ("POST", "/v1/scans"),
        ("POST", "/v1/scans/batch"),
    }
)


class Gate:
    """A first-come, first-served limit on how many holders are inside at once (one event loop)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inside = 0
        self._queue: deque[asyncio.Future[None]] = deque()

    async def enter(self, *, first: bool = False) -> None:
        """Wait for a place: at the end of the line, or at its head with `first`."""
        if self.inside < self.limit and not self._queue:
            self.inside += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if first:
            self._queue.appendleft(waiter)
        else:
            self._queue.append(waiter)
        try:
            await waiter  # `leave` hands its place over: `inside` already counts this one
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.leave()  # handed a place just as it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._queue.remove(waiter)
            raise

    def leave(self) -> None:
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.inside -= 1


class GateMiddleware:
    """Puts the requests of `HOT_ROUTES` through a `Gate` of `limit` places (none with 0). A gate is
    made per event loop (a process serves on one; tests may run several in turn)."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit
        self._gates: dict[asyncio.AbstractEventLoop, Gate] = {}

    def gate(self) -> Gate:
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None:
            self._gates = {loop: (gate := Gate(self.limit))}  # (a loop that served before is gone)
        return gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.limit or scope["type"] != "http" or (scope["method"], scope["path"]) not in HOT_ROUTES:
            await self.app(scope, receive, send)
            return
        ticket = _Ticket(self.gate())
        await ticket.enter()
        scope.setdefault("state", {})["gate_ticket"] = ticket
        try:
            await self.app(scope, receive, send)
        finally:
            ticket.leave()


class _Ticket:
    """One request's passage through a gate: in, out while it waits elsewhere, in again."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.inside = False

    async def enter(self, *, first: bool = False) -> None:
        await self.gate.enter(first=first)
        self.inside = True

    def leave(self) -> None:
        if self.inside:
            self.inside = False
            self.gate.leave()


def leave_gate(request: Request) -> None:
    """Let the next request through the gate now: this one goes on to wait on another service."""
    ticket: _Ticket | None = request.scope.get("state", {}).get("gate_ticket")
    if ticket is not None:
        ticket.leave()


async def back_through_gate(request: Request) -> None:
    """Go in again, ahead of the requests that have not been in yet, after `leave_gate`."""
    ticket: _Ticket | None = request.scope.get("state", {}).get("gate_ticket")
    if ticket is not None and not ticket.inside:
        await ticket.enter(first=True)

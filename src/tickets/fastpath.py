"""A shorter way through FastAPI for the hottest routes: the door's scan and the public's order.

FastAPI solves a route's dependencies on every request (about a quarter of a door scan's CPU, measured
with bench/calls.py). A route of a router with `route_class=FastPathRoute`, whose endpoint is marked with
`@fast_path(handler)`, is served by `handler` for the ordinary request: it works out the endpoint's
arguments itself (the same dependencies, called directly) and calls the endpoint. For anything else it
returns None, and FastAPI's own handler takes the request: a body that is not JSON or fails validation,
another content type, an oversized header, so that every such answer is exactly FastAPI's. The route is
declared as any other: its OpenAPI operation comes from the endpoint's signature, unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

FastHandler = Callable[[Request], Awaitable[Response | None]]
E = TypeVar("E", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)


def fast_path(handler: FastHandler) -> Callable[[E], E]:
    """Mark an endpoint as served by `handler` where it can (see the module); apply it below the route
    decorator, which makes the route."""

    def mark(endpoint: E) -> E:
        endpoint.__fast_path__ = handler  # type: ignore[attr-defined]
        return endpoint

    return mark


class FastPathRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        standard = super().get_route_handler()
        fast: FastHandler | None = getattr(self.endpoint, "__fast_path__", None)
        if fast is None:
            return standard

        async def handler(request: Request) -> Response:
            response = await fast(request)
            return response if response is not None else await standard(request)

        return handler


async def json_body(request: Request, model: type[M]) -> M | None:
    """The request's JSON body as `model`, validated as FastAPI validates a body parameter (the decoded
    JSON, in Python mode); None if the request is not `application/json` or its body does not validate."""
    content_type = request.headers.get("content-type", "")
    if content_type.partition(";")[0].strip().lower() != "application/json":
        return None
    try:
        return model.model_validate(json.loads(await request.body()))
    except (ValueError, ValidationError):  # not JSON (JSONDecodeError is a ValueError), or not valid
        return None

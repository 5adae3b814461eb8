"""RFC 9457 problem details with a stable machine `code`, and every exception handler in one place."""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger("tickets.problems")

PROBLEM_MEDIA_TYPE = "application/problem+json"


class ProblemError(Exception):
    """A failure a caller can act on. Subclasses fix status, code and title; the detail varies."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"
    headers: dict[str, str] | None = None

    def __init__(self, detail: str | None = None, **extensions: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extensions = extensions


class BadRequest(ProblemError):
    status, code, title = 400, "bad_request", "Bad request"


class MalformedBody(ProblemError):
    status, code, title = 400, "malformed_body", "Malformed request body"


class Unauthenticated(ProblemError):
    status, code, title = 401, "unauthenticated", "Authentication required"

    def __init__(self, detail: str | None = None, **extensions: Any) -> None:
        super().__init__(detail, **extensions)
        self.headers = {"WWW-Authenticate": "Bearer"}


class InvalidApiKey(Unauthenticated):
    status, code, title = 401, "invalid_api_key", "Invalid API key"


class Forbidden(ProblemError):
    status, code, title = 403, "forbidden", "Not allowed"


class NotFound(ProblemError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(ProblemError):
    status, code, title = 409, "conflict", "Conflict"


class RetryLater(ProblemError):
    """A problem that a retry after `Retry-After` seconds will most likely get past."""

    default_detail: ClassVar[str | None] = None

    def __init__(self, detail: str | None = None, *, retry_after: int = 1, **extensions: Any) -> None:
        super().__init__(detail or self.default_detail, **extensions)
        self.headers = {"Retry-After": str(retry_after)}


class Busy(RetryLater):
    """Contention that a retry will most likely get past (a lock wait that timed out)."""

    status, code, title = 409, "busy", "Busy, retry shortly"
    default_detail = "The resource is busy; retry after a short pause."


class PayloadTooLarge(ProblemError):
    status, code, title = 413, "payload_too_large", "Request body too large"


class UnsupportedMediaType(ProblemError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class ValidationFailed(ProblemError):
    status, code, title = 422, "validation_error", "Invalid request"


class RateLimited(RetryLater):
    status, code, title = 429, "rate_limited", "Too many requests"


class InternalError(ProblemError):
    status, code, title = 500, "internal_error", "Internal server error"


class DatabaseUnavailable(RetryLater):
    """The database dropped the connection under a request (a restart, a failover, a proxy's idle timeout).

    The request's transaction went with the connection (unless it died while committing); the pool has
    discarded its connections, so a retry runs on fresh ones."""

    status, code, title = 503, "database_unavailable", "Database unavailable, retry shortly"
    default_detail = "The database connection was lost; retry after a short pause."


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    """An RFC 9457 problem document. Extension members depend on `code`."""

    model_config = {"extra": "allow"}

    type: str = Field(examples=["http://127.0.0.1:8000/problems/seat_unavailable"])
    title: str
    status: int
    detail: str
    instance: str | None = None
    code: str = Field(description="Stable machine-readable error code.")
    errors: list[ErrorItem] | None = None


def problem_responses(*problems: type[ProblemError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for a route: each status with the problem codes it may carry."""
    by_status: dict[int, list[type[ProblemError]]] = {}
    candidates: tuple[type[ProblemError], ...] = (*problems, ValidationFailed)
    for problem in candidates:
        by_status.setdefault(problem.status, [])
        if problem not in by_status[problem.status]:
            by_status[problem.status].append(problem)
    responses: dict[int | str, dict[str, Any]] = {}
    for status, items in sorted(by_status.items()):
        codes = ", ".join(f"`{p.code}` ({p.title})" for p in items)
        responses[status] = {
            "model": Problem,
            "description": f"Problem: {codes}",
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    return responses


def _problem_response(
    request: Request,
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    extensions: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    type_: str | None = None,
) -> Response:
    base = str(getattr(request.app.state, "public_base_url", "")).rstrip("/")
    body: dict[str, Any] = dict(extensions or {})  # first: an extension never overrides a standard member
    body.update(
        {
            "type": type_ or f"{base}/problems/{code}",
            "title": title,
            "status": status,
            "detail": detail,
            "instance": request.url.path,
            "code": code,
        }
    )
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def problem_from_error(request: Request, exc: ProblemError) -> Response:
    return _problem_response(
        request,
        status=exc.status,
        code=exc.code,
        title=exc.title,
        detail=exc.detail,
        extensions=exc.extensions,
        headers=exc.headers,
    )


def _loc(loc: tuple[Any, ...] | list[Any]) -> list[str | int]:
    return [part if isinstance(part, int) else str(part) for part in loc]


async def _validation_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return problem_from_error(request, MalformedBody("The request body is not valid JSON."))
    items = [{"loc": _loc(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in errors]
    summary = "; ".join(f"{'.'.join(map(str, i['loc']))}: {i['msg']}" for i in items[:5])
    return problem_from_error(request, ValidationFailed(summary or "Invalid request.", errors=items))


async def _problem_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return problem_from_error(request, exc)


_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


async def _http_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    from http import HTTPStatus

    try:
        phrase = HTTPStatus(exc.status_code).phrase
    except ValueError:
        phrase = "Error"
    detail = exc.detail if isinstance(exc.detail, str) else phrase
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"No route matches {request.method} {request.url.path}."
    return _problem_response(
        request,
        status=exc.status_code,
        code=_HTTP_CODES.get(exc.status_code, phrase.lower().replace(" ", "_")),
        title=phrase,
        detail=detail,
        headers=getattr(exc, "headers", None),
        type_="about:blank",
    )


# SQLSTATEs that mean "somebody else holds it, try again": lock_not_available, deadlock_detected,
# serialization_failure, query_canceled (a statement/lock timeout).
RETRYABLE_SQLSTATES = frozenset({"55P03", "40P01", "40001", "57014"})


def is_contention(exc: BaseException) -> bool:
    """True for a lock wait or write conflict that a retry will get past."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate in RETRYABLE_SQLSTATES:
        return True
    text = str(orig).lower()
    return "database is locked" in text or "database table is locked" in text or "busy" in text


# SQLSTATEs of text the database cannot store (NUL bytes, bad encodings): the caller's input.
_BAD_TEXT_SQLSTATES = {"22021", "22P05"}


def is_disconnect(exc: BaseException) -> bool:
    """True when the statement failed because the connection died under it (SQLAlchemy has then
    invalidated the pool): a retry on a fresh connection will most likely go through."""
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


async def _db_handler(request: Request, exc: Exception) -> Response:
    if is_contention(exc):
        return problem_from_error(request, Busy())
    if is_disconnect(exc):
        log.warning("database connection lost on %s %s", request.method, request.url.path)
        return problem_from_error(request, DatabaseUnavailable())
    orig = getattr(exc, "orig", None)
    if (getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)) in _BAD_TEXT_SQLSTATES:
        return problem_from_error(
            request, ValidationFailed("The request contains characters that cannot be stored.", errors=[])
        )
    log.exception("database error on %s %s", request.method, request.url.path)
    return problem_from_error(request, InternalError("An unexpected error occurred."))


async def _integrity_handler(request: Request, exc: Exception) -> Response:
    # A constraint caught what validation did not: a conflict with stored data, never a crash.
    log.warning("integrity error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return problem_from_error(request, Conflict("The request conflicts with the stored data."))


async def _unexpected_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_from_error(request, InternalError("An unexpected error occurred."))


def register_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _problem_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(IntegrityError, _integrity_handler)
    app.add_exception_handler(DBAPIError, _db_handler)
    app.add_exception_handler(Exception, _unexpected_handler)


def json_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)

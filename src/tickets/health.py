from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from tickets.problems import Problem

router = APIRouter(tags=["Operations"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness",
    responses={
        503: {
            "model": Problem,
            "description": "Problem: `database_unavailable`",
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    },
)
async def readyz(request: Request) -> JSONResponse:
    """The database answers."""
    try:
        async with request.app.state.db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return JSONResponse(
            {
                "type": "about:blank",
                "title": "Service Unavailable",
                "status": 503,
                "detail": "The database is not reachable.",
                "code": "database_unavailable",
            },
            status_code=503,
            media_type="application/problem+json",
        )
    return JSONResponse({"status": "ready"})

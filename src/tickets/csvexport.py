"""CSV for spreadsheets: a list route answers `Accept: text/csv` with the whole filtered list."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterable, Sequence
from typing import Any

from fastapi import Request
from fastapi.responses import Response


def wants_csv(request: Request) -> bool:
    return "text/csv" in request.headers.get("accept", "")


def cell(value: object) -> str:
    text = "" if value is None else (value.isoformat() if hasattr(value, "isoformat") else str(value))
    # A cell that a spreadsheet would run as a formula is quoted as text.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def csv_response(columns: Sequence[str], rows: AsyncIterable[Sequence[Any]], *, filename: str) -> Response:
    """UTF-8 CSV with a header row, offered as a download named `filename`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    async for row in rows:
        writer.writerow([cell(v) for v in row])
    return Response(
        content=buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


# The documented 200 of a route that can answer in CSV.
CSV_CONTENT = {"text/csv": {"schema": {"type": "string"}}}

"""`GET /door`: the single-page scanner for door staff.

Its files live in `static/door/` inside the package (plain HTML, CSS and JavaScript, nothing to build)
and are served from a fixed list, so nothing else on disk is reachable. The page calls the `/v1` API
with the staff member's door key; these routes are not part of the API and stay out of the OpenAPI
document. Their Content-Security-Policy (set by `RequestContextMiddleware`) allows the page's own
scripts, the camera and calls back to this origin only.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from tickets.problems import NotFound

DOOR_DIR = Path(__file__).resolve().parent / "static" / "door"

# name -> media type; anything else under /door/ is a 404.
ASSETS: dict[str, str] = {
    "door.js": "text/javascript; charset=utf-8",
    "door.css": "text/css; charset=utf-8",
    "jsQR.js": "text/javascript; charset=utf-8",
    "jsQR.LICENSE.txt": "text/plain; charset=utf-8",
    "NOTICE.txt": "text/plain; charset=utf-8",
    "sw.js": "text/javascript; charset=utf-8",
    "icon.svg": "image/svg+xml",
    "manifest.webmanifest": "application/manifest+json",
}

# Revalidate every time (cheap, with ETag and Last-Modified), so that a new release reaches the doors.
_HEADERS = {"Cache-Control": "no-cache", "Permissions-Policy": "camera=(self), microphone=(), geolocation=()"}

router = APIRouter(include_in_schema=False)


@router.get("/door")
async def door_page() -> FileResponse:
    """The page itself."""
    return FileResponse(DOOR_DIR / "index.html", media_type="text/html; charset=utf-8", headers=_HEADERS)


@router.get("/door/{name}")
async def door_asset(name: str) -> FileResponse:
    """One of the page's files."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound("No such file.")
    headers = dict(_HEADERS)
    if name == "sw.js":
        # The page lives at /door (no trailing slash): let its service worker control that path.
        headers["Service-Worker-Allowed"] = "/door"
    return FileResponse(DOOR_DIR / name, media_type=media_type, headers=headers)

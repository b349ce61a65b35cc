"""The web interface (``GET /ui/``): static files of our own, shipped in the package; a
person signs in with an API key in the page, which then calls the API with it (the page
itself needs no key: it holds no data)."""

from __future__ import annotations

from importlib.resources import files
from typing import Final

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from incident_responder.errors import NotFound

router = APIRouter(prefix="/ui", tags=["ui"], include_in_schema=False)

_TYPES: Final = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# Only this page's own files and the API of this origin; no inline script or style.
_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _file(name: str) -> Response:
    if name not in _TYPES:  # a fixed set of names: nothing else of the package can be read
        raise NotFound(f"no such file: /ui/{name}")
    body = files("incident_responder.api").joinpath("ui", name).read_bytes()
    return Response(body, media_type=_TYPES[name], headers=_HEADERS)


@router.get("")
async def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=308)


@router.get("/")
async def ui_index() -> Response:
    return _file("index.html")


@router.get("/{name}")
async def ui_file(name: str) -> Response:
    return _file(name)

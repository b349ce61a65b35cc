"""``X-Request-ID``: taken from the caller when sane, else made up; logged and echoed."""

from __future__ import annotations

import re

import structlog
from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from incident_responder.ids import random_bits

HEADER = "X-Request-ID"
_HEADER_KEY = HEADER.lower().encode("latin-1")
_VALID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def valid_request_id(value: str | None) -> str | None:
    """``value`` when it is 1-128 characters of ``[A-Za-z0-9._-]``, else ``None``."""
    return value if value is not None and _VALID.fullmatch(value) else None


def new_request_id() -> str:
    """32 hex digits, as ``uuid4().hex`` was (without its GIL-releasing ``os.urandom``)."""
    return f"{random_bits(128):032x}"


class RequestIdMiddleware:
    """Pure ASGI middleware: binds ``request_id`` into structlog's context variables for
    the request (the previous bindings come back afterwards), stores it in
    ``request.state.request_id``, puts it on the current span and echoes it in the
    ``X-Request-ID`` response header (replacing any the app set)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _from_headers(scope) or new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("ir.request_id", request_id)
        raw_id = request_id.encode("latin-1")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != _HEADER_KEY]
                headers.append((_HEADER_KEY, raw_id))
                message = {**message, "headers": headers}
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            await self.app(scope, receive, send_with_id)


def _from_headers(scope: Scope) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == _HEADER_KEY:
            try:
                return valid_request_id(value.decode("latin-1"))
            except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
                return None
    return None

"""The single place where exceptions become HTTP responses (contract error shape)."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from incident_responder.errors import IncidentResponderError, RateLimited

log = structlog.get_logger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


def retry_after(exc: IncidentResponderError) -> int | None:
    """Seconds a client should wait before trying again: a rate limit's wait, 1 for any other
    503 (the service is starting, a backend is down), None where trying again will not help."""
    if isinstance(exc, RateLimited):
        return exc.retry_after
    return 1 if exc.status == 503 else None


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(IncidentResponderError)
    async def _domain(_: Request, exc: IncidentResponderError) -> JSONResponse:
        headers = {"Retry-After": str(retry_after(exc))} if retry_after(exc) else None
        if exc.status >= 500:
            log.error("request.failed", code=exc.code, error=exc.message)
        return error_response(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Malformed JSON is 400; well-formed JSON that breaks the schema is 422.
        if any(err.get("type") == "json_invalid" for err in exc.errors()):
            return error_response(400, "bad_request", "request body is not valid JSON")
        return error_response(422, "invalid_input", _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("request.crashed", error_type=type(exc).__name__)
        return error_response(500, "internal_error", "internal error; the request was not applied partially")

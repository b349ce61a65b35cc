"""Request ids: honoured when valid, made when missing, echoed once, bound to every log line."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from incident_responder.observability.request_ids import RequestIdMiddleware, valid_request_id


def _request_id_app() -> FastAPI:
    app = FastAPI()

    @app.get("/who")
    async def who(request: Request) -> dict[str, object]:
        structlog.get_logger("test").info("inside")
        return {
            "bound": structlog.contextvars.get_contextvars().get("request_id"),
            "state": request.state.request_id,
        }

    @app.get("/own-header")
    async def own_header() -> JSONResponse:
        return JSONResponse({}, headers={"X-Request-ID": "from-the-app"})

    app.add_middleware(RequestIdMiddleware)
    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=_request_id_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_valid_request_id_is_echoed_and_bound(client: httpx.AsyncClient) -> None:
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        response = await client.get("/who", headers={"X-Request-ID": "abc-123_X.y"})
    assert response.headers["X-Request-ID"] == "abc-123_X.y"
    assert response.json() == {"bound": "abc-123_X.y", "state": "abc-123_X.y"}
    assert [entry.get("request_id") for entry in logs] == ["abc-123_X.y"]
    assert "request_id" not in structlog.contextvars.get_contextvars(), "unbound after the request"


@pytest.mark.parametrize("given", [None, "", "has space", "x" * 129, "semi;colon", "ünïcode", "a/b"])
async def test_invalid_or_missing_request_id_is_replaced(
    client: httpx.AsyncClient, given: str | None
) -> None:
    headers = [] if given is None else [(b"X-Request-ID", given.encode("utf-8"))]
    response = await client.get("/who", headers=headers)
    rid = response.headers["X-Request-ID"]
    assert rid != given
    assert len(rid) == 32 and int(rid, 16) >= 0
    assert response.json() == {"bound": rid, "state": rid}


async def test_each_request_gets_its_own_id(client: httpx.AsyncClient) -> None:
    first = (await client.get("/who")).headers["X-Request-ID"]
    second = (await client.get("/who")).headers["X-Request-ID"]
    assert first != second


async def test_the_response_has_exactly_one_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/own-header", headers={"X-Request-ID": "mine"})
    assert response.headers.get_list("X-Request-ID") == ["mine"]


async def test_non_http_scopes_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        pass

    await RequestIdMiddleware(app)({"type": "lifespan"}, receive, send)
    assert seen == ["lifespan"]


def test_valid_request_id_bounds() -> None:
    assert valid_request_id("a" * 128) == "a" * 128
    assert valid_request_id("a" * 129) is None
    assert valid_request_id("ok\n") is None
    assert valid_request_id(None) is None

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from incident_responder.api.schemas import ErrorBody
from incident_responder.errors import NotFound, Unauthorized

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/readyz", responses={503: {"description": "still starting, or start-up failed"}})
async def readyz(request: Request) -> JSONResponse:
    services = request.app.state.services
    failure = request.app.state.startup_error
    if services is None:
        detail = {"status": "failed" if failure else "starting", **({"error": failure} if failure else {})}
        return JSONResponse(detail, status_code=503)
    # Ready means: model loaded, stores opened, runbooks preloaded. A backend that is
    # down since then makes the service "degraded", not unready: reports are still
    # accepted (into the dead-letter queue) and nothing is lost.
    checks = await anyio.to_thread.run_sync(services.check_backends)
    circuits = {g.backend: g.breaker.state for g in services.backends.guards}
    degraded = any(v != "ok" for v in checks.values()) or any(v != "closed" for v in circuits.values())
    return JSONResponse(
        {
            "status": "degraded" if degraded else "ready",
            "model": "loaded",
            "backends": checks,
            "circuits": circuits,
            "dead_letters": await anyio.to_thread.run_sync(services.backends.dead_letters.depth),
        }
    )


@dataclass(frozen=True)
class MetricsAccess:
    """Who may read ``/metrics`` on the API's port: anyone, holders of ``token``, or nobody
    (``elsewhere``: the metrics have their own port)."""

    token: str = ""
    elsewhere: bool = False

    def check(self, authorization: str | None) -> None:
        if self.elsewhere:
            raise NotFound("metrics are served on their own port (IR_METRICS__PORT)")
        if not self.token:
            return
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), self.token.encode()
        ):
            raise Unauthorized("/metrics needs 'Authorization: Bearer <IR_METRICS__TOKEN>'")


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"},
        401: {"model": ErrorBody, "description": "IR_METRICS__TOKEN is set and was not presented"},
        404: {"model": ErrorBody, "description": "the metrics are served on their own port"},
    },
)
async def metrics(request: Request, authorization: Annotated[str | None, Header()] = None) -> Response:
    request.app.state.metrics_access.check(authorization)
    body = await anyio.to_thread.run_sync(request.app.state.metrics.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST)

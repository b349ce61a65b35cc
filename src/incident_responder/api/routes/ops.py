from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    services = request.app.state.services
    failure = request.app.state.startup_error
    if services is None:
        detail = {"status": "failed" if failure else "starting", **({"error": failure} if failure else {})}
        return JSONResponse(detail, status_code=503)
    backends = {g.backend: g.breaker.state for g in services.guards}
    degraded = any(state != "closed" for state in backends.values())
    return JSONResponse(
        {
            "status": "degraded" if degraded else "ready",
            "model": "loaded",
            "backends": backends,
            "dead_letters": int(services.metrics.dlq_depth._value.get()),
        }
    )


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

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
    circuits = {g.backend: g.breaker.state for g in services.guards}
    degraded = any(v != "ok" for v in checks.values()) or any(v != "closed" for v in circuits.values())
    return JSONResponse(
        {
            "status": "degraded" if degraded else "ready",
            "model": "loaded",
            "backends": checks,
            "circuits": circuits,
            "dead_letters": await anyio.to_thread.run_sync(services.dead_letters.depth),
        }
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

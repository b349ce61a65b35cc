from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse, Response

from incident_responder.api.deps import ServicesDep, TenantDep
from incident_responder.api.schemas import ERROR_RESPONSES, RunbookIn, RunbookList, RunbookOut, RunbookSummary
from incident_responder.models import Runbook

router = APIRouter(prefix="/v1/runbooks", tags=["runbooks"], responses=ERROR_RESPONSES)
RunbookId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")]


@router.put(
    "/{runbook_id}",
    response_model=RunbookOut,
    responses={201: {"model": RunbookOut, "description": "created"}},
)
async def put_runbook(
    runbook_id: RunbookId, body: RunbookIn, services: ServicesDep, tenant: TenantDep
) -> JSONResponse:
    runbook = Runbook(id=runbook_id, **body.model_dump())
    created = await anyio.to_thread.run_sync(lambda: services.catalog.put(tenant, runbook))
    services.metrics.runbooks.inc(1 if created else 0)
    return JSONResponse(RunbookOut.of(runbook).model_dump(mode="json"), status_code=201 if created else 200)


@router.get("", response_model=RunbookList)
async def list_runbooks(services: ServicesDep, tenant: TenantDep) -> RunbookList:
    runbooks = await anyio.to_thread.run_sync(lambda: services.catalog.all(tenant))
    return RunbookList(
        runbooks=[
            RunbookSummary(
                id=r.id, title=r.title, services=r.services, tags=r.tags, updated_at=r.updated_at.isoformat()
            )
            for r in runbooks
        ]
    )


@router.get("/{runbook_id}", response_model=RunbookOut)
async def get_runbook(runbook_id: RunbookId, services: ServicesDep, tenant: TenantDep) -> RunbookOut:
    return RunbookOut.of(await anyio.to_thread.run_sync(lambda: services.catalog.get(tenant, runbook_id)))


@router.delete("/{runbook_id}", status_code=204)
async def delete_runbook(runbook_id: RunbookId, services: ServicesDep, tenant: TenantDep) -> Response:
    await anyio.to_thread.run_sync(lambda: services.catalog.delete(tenant, runbook_id))
    services.metrics.runbooks.dec()
    return Response(status_code=204)

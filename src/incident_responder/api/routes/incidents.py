from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from incident_responder.api.bodies import validated_items
from incident_responder.api.deps import ServicesDep, TenantDep
from incident_responder.api.schemas import ERROR_RESPONSES, BatchIn, BatchOut, IncidentIn
from incident_responder.errors import InvalidInput
from incident_responder.models import IncidentResult

router = APIRouter(prefix="/v1/incidents", tags=["incidents"], responses=ERROR_RESPONSES)


def _status_code(result: IncidentResult) -> int:
    return {"new": 201, "queued": 202}.get(result.status, 200)


def _check_lengths(services: ServicesDep, incidents: list[IncidentIn]) -> None:
    limit = services.settings.max_log_chars
    for i, incident in enumerate(incidents):
        if len(incident.log) > limit:
            where = "log" if len(incidents) == 1 else f"incidents.{i}.log"
            raise InvalidInput(f"{where}: must be at most {limit} characters")


_OUTCOMES: dict[int | str, dict[str, object]] = {
    200: {"model": IncidentResult, "description": "existing or regression: joined a ticket"},
    202: {"model": IncidentResult, "description": "queued: a backend is down; stored durably, applied later"},
}


@router.post("", status_code=201, response_model=IncidentResult, responses=_OUTCOMES)
async def report_incident(
    body: IncidentIn,
    request: Request,
    services: ServicesDep,
    tenant: TenantDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> JSONResponse:
    _check_lengths(services, [body])

    async def handle() -> tuple[int, dict[str, Any]]:
        result = await services.responder.handle(tenant, body.to_report())
        return _status_code(result), result.model_dump(mode="json")

    status, payload = await request.app.state.idempotency.run(
        tenant, idempotency_key, "incident", await request.body(), handle
    )
    return JSONResponse(payload, status_code=status)


def _batch_body() -> dict[str, Any]:
    """The batch request body as the OpenAPI schema shows it (the route reads it itself)."""
    schema = BatchIn.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


@router.post("/batch", status_code=200, response_model=BatchOut, openapi_extra=_batch_body())
async def report_batch(
    request: Request,
    services: ServicesDep,
    tenant: TenantDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> JSONResponse:
    raw = await request.body()
    incidents = await validated_items(
        raw, request.headers.get("content-type"), "incidents", IncidentIn, allowed={}
    )
    if len(incidents) > services.settings.max_batch:
        raise InvalidInput(f"incidents: at most {services.settings.max_batch} per batch")
    _check_lengths(services, incidents)

    async def handle() -> tuple[int, dict[str, Any]]:
        results = await services.responder.handle_batch(tenant, [i.to_report() for i in incidents])
        return 200, {"results": [r.model_dump(mode="json") for r in results]}

    status, payload = await request.app.state.idempotency.run(tenant, idempotency_key, "batch", raw, handle)
    return JSONResponse(payload, status_code=status)


@router.get("/{incident_id}", response_model=IncidentResult)
async def get_incident(incident_id: str, services: ServicesDep, tenant: TenantDep) -> IncidentResult:
    return await services.responder.lookup(tenant, incident_id)

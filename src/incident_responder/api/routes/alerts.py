"""Alert sources' webhooks: Prometheus Alertmanager and Grafana.

A well-formed notification is never refused with a 4xx for being over a rate limit or for a
backend being down (Alertmanager drops a notification answered with a 4xx and retries a 5xx):
the gate answers 503 with ``Retry-After`` over a rate limit, and reports that cannot be
applied now are queued (202).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from incident_responder.alerts.payloads import SourceAlert
from incident_responder.alerts.signatures import verify_grafana
from incident_responder.api.bodies import validated_items
from incident_responder.api.deps import ServicesDep, TenantDep
from incident_responder.api.schemas import ERROR_RESPONSES, BatchOut
from incident_responder.container import Services
from incident_responder.models import AlertSourceName, IncidentResult

router = APIRouter(prefix="/v1/alerts", tags=["alerts"], responses=ERROR_RESPONSES)

_OUTCOMES: dict[int | str, dict[str, Any]] = {
    202: {"model": BatchOut, "description": "every alert queued: a backend is down; applied later"},
}


def _notification_body(source: str) -> dict[str, Any]:
    """The request body as the OpenAPI schema shows it (the route reads it itself)."""
    schema = {
        "type": "object",
        "required": ["alerts"],
        "properties": {"alerts": {"type": "array", "items": SourceAlert.model_json_schema(by_alias=True)}},
        "additionalProperties": True,
        "description": f"a {source} webhook notification",
    }
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def _receive(
    request: Request, services: Services, tenant: str, source: AlertSourceName
) -> JSONResponse:
    raw = await request.body()
    if source == "grafana":
        await _check_signature(request, services, tenant, raw)
    alerts = await validated_items(
        raw, request.headers.get("content-type"), "alerts", SourceAlert, allowed=None, min_items=0
    )
    results = await services.alert_intake.receive(tenant, source, alerts)
    return JSONResponse(
        {"results": [r.model_dump(mode="json") for r in results]}, status_code=_status_code(results)
    )


def _status_code(results: list[IncidentResult]) -> int:
    return 202 if results and all(r.status == "queued" for r in results) else 200


async def _check_signature(request: Request, services: Services, tenant: str, raw: bytes) -> None:
    cfg = services.settings.alerts
    policy = await services.stages.run("policy", lambda: services.policies.get(tenant))
    secret = policy.grafana_secret or cfg.grafana_secret.get_secret_value()
    if secret:
        verify_grafana(
            raw,
            request.headers,
            secret=secret,
            signature_header=cfg.grafana_signature_header,
            timestamp_header=cfg.grafana_timestamp_header,
        )


@router.post(
    "/alertmanager",
    response_model=BatchOut,
    responses=_OUTCOMES,
    openapi_extra=_notification_body("Prometheus Alertmanager (version 4)"),
)
async def alertmanager(request: Request, services: ServicesDep, tenant: TenantDep) -> JSONResponse:
    return await _receive(request, services, tenant, "alertmanager")


@router.post(
    "/grafana",
    response_model=BatchOut,
    responses=_OUTCOMES,
    openapi_extra=_notification_body("Grafana alerting"),
)
async def grafana(request: Request, services: ServicesDep, tenant: TenantDep) -> JSONResponse:
    return await _receive(request, services, tenant, "grafana")

"""Silences: matching reports are recorded and deduplicated, but notify nobody."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from incident_responder.api.deps import ServicesDep, TenantDep
from incident_responder.api.schemas import ERROR_RESPONSES, SilenceIn
from incident_responder.models import utcnow
from incident_responder.notifications.silences import Silence

router = APIRouter(prefix="/v1/silences", tags=["silences"], responses=ERROR_RESPONSES)


def _shown(silence: Silence) -> dict[str, Any]:
    return {**silence.model_dump(mode="json"), "state": silence.state(utcnow())}


@router.post("", status_code=201)
async def create_silence(body: SilenceIn, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    silence = await services.stages.run(
        "store",
        lambda: services.silences.create(
            tenant,
            services=body.services,
            labels=body.labels,
            starts_at=body.starts_at,
            ends_at=body.ends_at,
            comment=body.comment,
        ),
    )
    return _shown(silence)


@router.get("")
async def list_silences(services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    silences = await services.stages.run("store", lambda: services.silences.all(tenant))
    return {"silences": [_shown(s) for s in silences]}


@router.get("/{silence_id}")
async def get_silence(silence_id: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    return _shown(await services.stages.run("store", lambda: services.silences.get(tenant, silence_id)))


@router.delete("/{silence_id}", status_code=204)
async def delete_silence(silence_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    await services.stages.run("store", lambda: services.silences.delete(tenant, silence_id))
    return Response(status_code=204)

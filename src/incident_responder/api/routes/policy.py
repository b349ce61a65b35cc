"""The tenant's policy: alert lifecycle and notification pacing (defaults where unset)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from incident_responder.api.deps import ServicesDep, TenantDep
from incident_responder.api.schemas import ERROR_RESPONSES
from incident_responder.policies import TenantPolicy

router = APIRouter(prefix="/v1/policy", tags=["policy"], responses=ERROR_RESPONSES)


@router.get("")
async def get_policy(services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    policy = await services.stages.run("policy", lambda: services.policies.get(tenant))
    return policy.shown()


@router.put("")
async def put_policy(body: TenantPolicy, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """Set the tenant's policy: the fields given replace the stored ones; fields left out take
    the service's defaults."""
    policy = await services.stages.run("policy", lambda: services.policies.put(tenant, body))
    return policy.shown()

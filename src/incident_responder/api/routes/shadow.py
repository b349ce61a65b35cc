"""The shadow grouping's report: how a candidate normalizer table and thresholds would have
grouped the tenant's reports, compared with the live decisions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from incident_responder.api.deps import ServicesDep, TenantDep
from incident_responder.api.schemas import ERROR_RESPONSES

router = APIRouter(prefix="/v1/shadow", tags=["shadow"], responses=ERROR_RESPONSES)


@router.get("/report")
async def shadow_report(services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """Agreement of the candidate with the live grouping in this process since it started, and
    the newest disagreements with both explanations (``{"enabled": false}`` when none runs)."""
    if services.shadow is None:
        return {"enabled": False}
    return services.shadow.report(tenant)

"""Request-scoped dependencies: the service container and the caller's tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from incident_responder.container import Services
from incident_responder.errors import BackendUnavailable, RateLimited

DEFAULT_TENANT = "default"


def get_services(request: Request) -> Services:
    services: Services | None = request.app.state.services
    if services is None:
        raise BackendUnavailable("the service is starting; retry shortly")
    return services


def get_tenant(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> str:
    """Authenticate, then count the request against the key's and the tenant's budgets."""
    keyring = request.app.state.keyring
    tenant = keyring.tenant_for(x_api_key) if keyring.enabled else DEFAULT_TENANT
    try:
        request.app.state.limiter.check(tenant, x_api_key)
    except RateLimited:
        request.app.state.metrics.rate_limited.inc()
        raise
    return tenant


ServicesDep = Annotated[Services, Depends(get_services)]
TenantDep = Annotated[str, Depends(get_tenant)]

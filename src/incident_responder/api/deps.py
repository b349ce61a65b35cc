"""Request-scoped dependencies: the service container and the caller's tenant.

Both are coroutines: FastAPI runs a plain ``def`` dependency in its thread pool, a thread
hop per request that cost about 6 % of the time the single-request storm held the GIL.
Only a rate-limit check against Redis leaves the event loop.
"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import Depends, Header, Request

from incident_responder.container import Services
from incident_responder.errors import BackendUnavailable, RateLimited

DEFAULT_TENANT = "default"


async def get_services(request: Request) -> Services:
    services: Services | None = request.app.state.services
    if services is None:
        raise BackendUnavailable("the service is starting; retry shortly")
    return services


async def get_tenant(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> str:
    """Authenticate, then count the request against the key's and the tenant's budgets."""
    keyring = request.app.state.keyring
    tenant = keyring.tenant_for(x_api_key) if keyring.enabled else DEFAULT_TENANT
    limiter = request.app.state.limiter
    try:
        if limiter.blocking:
            await anyio.to_thread.run_sync(limiter.check, tenant, x_api_key)
        else:
            limiter.check(tenant, x_api_key)
    except RateLimited:
        request.app.state.metrics.rate_limited.inc()
        raise
    return tenant


ServicesDep = Annotated[Services, Depends(get_services)]
TenantDep = Annotated[str, Depends(get_tenant)]

"""Request-scoped dependencies: the service container and the caller's tenant.

The tenant was established by the ``Gate`` middleware from the request's headers, before
its body was read; the dependencies here only document the two ways of presenting a key
(``X-API-Key``, ``Authorization: Bearer``) in the OpenAPI schema. Both are coroutines:
FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from incident_responder.container import Services
from incident_responder.errors import BackendUnavailable, Unauthorized

_API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key of the tenant")
_BEARER = HTTPBearer(auto_error=False, description="the same API key as a bearer token")


async def get_services(request: Request) -> Services:
    services: Services | None = request.app.state.services
    if services is None:
        raise BackendUnavailable("the service is starting; retry shortly")
    return services


async def get_tenant(
    request: Request,
    _key: Annotated[str | None, Security(_API_KEY)] = None,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)] = None,
) -> str:
    tenant = request.scope.get("state", {}).get("tenant")
    if not isinstance(tenant, str):  # only a route the gate does not guard could get here
        raise Unauthorized("missing API key")
    return tenant


ServicesDep = Annotated[Services, Depends(get_services)]
TenantDep = Annotated[str, Depends(get_tenant)]

"""Request-scoped dependencies: the service container and the caller's tenant."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from incident_responder.container import Services
from incident_responder.errors import BackendUnavailable, Unauthorized

DEFAULT_TENANT = "default"


def get_services(request: Request) -> Services:
    services: Services | None = request.app.state.services
    if services is None:
        raise BackendUnavailable("the service is starting; retry shortly")
    return services


def get_tenant(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> str:
    keys: dict[str, str] = request.app.state.api_keys
    if not keys:
        return DEFAULT_TENANT  # --insecure-no-auth
    if not x_api_key:
        raise Unauthorized("missing X-API-Key header")
    presented = x_api_key.encode("utf-8", "surrogateescape")
    tenant = None
    # Compare against every key so the time taken does not reveal which one nearly matched.
    for key, owner in keys.items():
        if hmac.compare_digest(presented, key.encode("utf-8")):
            tenant = owner
    if tenant is None:
        raise Unauthorized("invalid API key")
    return tenant


ServicesDep = Annotated[Services, Depends(get_services)]
TenantDep = Annotated[str, Depends(get_tenant)]

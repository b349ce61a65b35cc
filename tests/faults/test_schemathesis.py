"""Property-based fuzzing over our own OpenAPI schema: no 5xx, every response as documented."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings

from incident_responder.api.app import create_app
from incident_responder.container import Services
from incident_responder.settings import Settings
from tests.conftest import ACME


def test_every_operation_conforms_to_the_schema(
    make_settings: Callable[..., Settings], make_services: Callable[..., Services]
) -> None:
    config = make_settings(max_log_chars=2000, rate_limit={"per_key": "", "per_tenant": ""})
    app = create_app(config, services=make_services(config))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            case.call_and_validate(headers=ACME)

        check()

"""RequestLimiter on its own: budgets per key and per tenant, and which storages block."""

from __future__ import annotations

import pytest

from incident_responder.api.ratelimit import RequestLimiter
from incident_responder.errors import ConfigError, RateLimited


def test_key_and_tenant_budgets_count_separately() -> None:
    limiter = RequestLimiter(per_key="2/minute", per_tenant="3/minute", storage_uri="memory://")
    limiter.check("acme", "key-one")
    limiter.check("acme", "key-one")
    with pytest.raises(RateLimited) as over_key:
        limiter.check("acme", "key-one")
    assert over_key.value.retry_after >= 1
    # The refused request counted against the tenant (it hit the tenant budget first): 3 used.
    with pytest.raises(RateLimited):
        limiter.check("acme", "key-two")
    limiter.check("other", "key-three")  # another tenant has its own budget


def test_only_an_in_memory_storage_is_called_on_the_event_loop() -> None:
    assert RequestLimiter(per_key="", per_tenant="", storage_uri="memory://").blocking is False
    # Building the Redis storage does not connect; checking it would.
    assert RequestLimiter(per_key="", per_tenant="", storage_uri="redis://127.0.0.1:6379/0").blocking is True


def test_a_malformed_budget_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        RequestLimiter(per_key="lots", per_tenant="", storage_uri="memory://")

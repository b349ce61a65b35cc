"""RequestLimiter on its own: budgets per key, per tenant and per address, and which storages block."""

from __future__ import annotations

import pytest

from incident_responder.api.ratelimit import RequestLimiter
from incident_responder.errors import ConfigError, InvalidInput, RateLimited


def test_a_key_over_its_budget_leaves_its_tenants_budget_untouched() -> None:
    limiter = RequestLimiter(per_key="2/minute", per_tenant="3/minute", storage_uri="memory://")
    limiter.check("acme", "key-one")
    limiter.check("acme", "key-one")
    for _ in range(5):  # the key's own refusals cost the tenant nothing
        with pytest.raises(RateLimited) as over_key:
            limiter.check("acme", "key-one")
        assert over_key.value.retry_after >= 1
    limiter.check("acme", "key-two")  # the tenant's third request: still within its budget
    with pytest.raises(RateLimited, match="tenant"):
        limiter.check("acme", "key-three")
    limiter.check("other", "key-four")  # another tenant has its own budget


def test_a_request_costs_its_number_of_incidents() -> None:
    limiter = RequestLimiter(per_key="10/minute", per_tenant="", storage_uri="memory://")
    limiter.check("acme", "key-one", cost=8)
    with pytest.raises(RateLimited):
        limiter.check("acme", "key-one", cost=3)
    limiter.check("acme", "key-one", cost=2)  # the refused 3 were not counted
    with pytest.raises(InvalidInput, match="more than the key budget"):
        limiter.check("acme", "key-two", cost=11)  # could never pass: said so, not "retry later"


def test_failed_authentications_are_limited_per_address() -> None:
    limiter = RequestLimiter(
        per_key="", per_tenant="", storage_uri="memory://", failed_auth_per_address="3/minute"
    )
    for _ in range(3):
        limiter.check_address("10.0.0.1")
        limiter.failed_auth("10.0.0.1")
    with pytest.raises(RateLimited, match="failed authentications") as refused:
        limiter.check_address("10.0.0.1")
    assert refused.value.retry_after >= 1
    limiter.check_address("10.0.0.2")  # another address is not affected


def test_only_an_in_memory_storage_is_called_on_the_event_loop() -> None:
    assert RequestLimiter(per_key="", per_tenant="", storage_uri="memory://").blocking is False
    # Building the Redis storage does not connect; checking it would.
    assert RequestLimiter(per_key="", per_tenant="", storage_uri="redis://127.0.0.1:6379/0").blocking is True


def test_a_malformed_budget_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        RequestLimiter(per_key="lots", per_tenant="", storage_uri="memory://")
    with pytest.raises(ConfigError):
        RequestLimiter(per_key="", per_tenant="", storage_uri="memory://", failed_auth_per_address="x")

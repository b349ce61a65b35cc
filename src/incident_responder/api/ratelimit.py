"""Rate limits (moving window) with the ``limits`` library: per key, per tenant, and per client
address for failed authentication.

A request is counted against its key first and its tenant second, so a key that is over its
own budget is refused without using up its tenant's (the other keys of the tenant keep
working). A request costs its number of incidents (a batch of 1,000 costs 1,000). Requests
that fail authentication are counted per client address, and an address over that budget is
refused before its key is even looked at.

Storage is in memory by default and Redis when ``IR_RATE_LIMIT__STORAGE_URI`` says so,
so replicas share one budget.
"""

from __future__ import annotations

import hashlib
import math
import time

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from incident_responder.errors import ConfigError, InvalidInput, RateLimited


class RequestLimiter:
    """The moving-window budgets of API keys, of tenants and of client addresses that fail
    authentication, counted in the ``limits`` storage named by ``storage_uri``."""

    def __init__(
        self, *, per_key: str, per_tenant: str, storage_uri: str, failed_auth_per_address: str = ""
    ) -> None:
        try:
            self._per_key: RateLimitItem | None = parse(per_key) if per_key else None
            self._per_tenant: RateLimitItem | None = parse(per_tenant) if per_tenant else None
            self._failed_auth: RateLimitItem | None = (
                parse(failed_auth_per_address) if failed_auth_per_address else None
            )
            self._limiter = MovingWindowRateLimiter(storage_from_string(storage_uri))
        except ValueError as exc:
            raise ConfigError(f"invalid rate limit setting: {exc}") from exc
        self._in_memory = storage_uri.startswith("memory://")

    @property
    def blocking(self) -> bool:
        """True if a check waits on a network storage (Redis): call it off the event loop."""
        return not self._in_memory

    def check(self, tenant: str, api_key: str | None, cost: int = 1) -> None:
        """Count ``cost`` requests against the key, then the tenant; raise ``RateLimited`` (with
        the seconds to wait) at the first budget that cannot take them. A budget counts nothing
        of a request it refuses, and a request its key refuses costs its tenant nothing;
        ``InvalidInput`` if ``cost`` is more than a whole budget (it could never pass)."""
        for item, kind, ident in self._budgets(tenant, api_key):
            if cost > item.amount:
                raise InvalidInput(
                    f"this request counts {cost} incidents, more than the {kind} budget {item}"
                )
            if not self._limiter.hit(item, kind, ident, cost=cost):
                raise RateLimited(
                    f"rate limit {item} exceeded for this {kind}", retry_after=self._reset(item, kind, ident)
                )

    def allows(self, tenant: str, api_key: str | None) -> None:
        """Raise ``RateLimited`` if one more request would be refused, counting nothing (for a
        request whose cost is known only once its body is read)."""
        for item, kind, ident in self._budgets(tenant, api_key):
            if not self._limiter.test(item, kind, ident):
                raise RateLimited(
                    f"rate limit {item} exceeded for this {kind}", retry_after=self._reset(item, kind, ident)
                )

    def check_address(self, address: str) -> None:
        """Raise ``RateLimited`` if ``address`` failed authentication too often lately."""
        if self._failed_auth is not None and not self._limiter.test(self._failed_auth, "auth", address):
            wait = self._reset(self._failed_auth, "auth", address)
            raise RateLimited("too many failed authentications from this address", retry_after=wait)

    def failed_auth(self, address: str) -> None:
        """Count one failed authentication from ``address``."""
        if self._failed_auth is not None:
            self._limiter.hit(self._failed_auth, "auth", address)

    def _budgets(self, tenant: str, api_key: str | None) -> list[tuple[RateLimitItem, str, str]]:
        budgets = []
        if self._per_key is not None and api_key:
            # The key itself never reaches the storage (which may be a shared Redis).
            budgets.append((self._per_key, "key", hashlib.sha256(api_key.encode()).hexdigest()[:32]))
        if self._per_tenant is not None:
            budgets.append((self._per_tenant, "tenant", tenant))
        return budgets

    def _reset(self, item: RateLimitItem, kind: str, ident: str) -> int:
        reset_at, _ = self._limiter.get_window_stats(item, kind, ident)
        return max(1, math.ceil(reset_at - time.time()))

"""Per-key and per-tenant rate limits (moving window) with the ``limits`` library.

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

from incident_responder.errors import ConfigError, RateLimited


class RequestLimiter:
    def __init__(self, *, per_key: str, per_tenant: str, storage_uri: str) -> None:
        try:
            self._per_key: RateLimitItem | None = parse(per_key) if per_key else None
            self._per_tenant: RateLimitItem | None = parse(per_tenant) if per_tenant else None
            self._limiter = MovingWindowRateLimiter(storage_from_string(storage_uri))
        except ValueError as exc:
            raise ConfigError(f"invalid rate limit setting: {exc}") from exc
        self._in_memory = storage_uri.startswith("memory://")

    @property
    def blocking(self) -> bool:
        """True if ``check`` waits on a network storage (Redis): call it off the event loop."""
        return not self._in_memory

    def check(self, tenant: str, api_key: str | None) -> None:
        """Count one request; raise ``RateLimited`` (with seconds to wait) when over budget."""
        checks = []
        if self._per_tenant is not None:
            checks.append((self._per_tenant, ("tenant", tenant)))
        if self._per_key is not None and api_key:
            # The key itself never reaches the storage (which may be a shared Redis).
            checks.append((self._per_key, ("key", hashlib.sha256(api_key.encode()).hexdigest()[:32])))
        for item, ident in checks:
            if not self._limiter.hit(item, *ident):
                reset_at, _ = self._limiter.get_window_stats(item, *ident)
                wait = max(1, math.ceil(reset_at - time.time()))
                raise RateLimited(f"rate limit {item} exceeded for this {ident[0]}", retry_after=wait)

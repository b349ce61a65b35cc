"""Idempotency-Key records in Redis, shared by every replica."""

from __future__ import annotations

import time
from typing import Any

import redis
from redis.exceptions import RedisError

from incident_responder.backends.redis_client import key_name
from incident_responder.errors import BackendUnavailable
from incident_responder.models import IdempotencyRecord


class RedisIdempotencyStore:
    """Idempotency records with a TTL, shared by every replica (blocking client), at most
    ``max_records`` per tenant: a sorted set per tenant orders its records by time, and the
    oldest beyond the cap are deleted as new ones are stored."""

    def __init__(
        self, client: redis.Redis, ttl_seconds: float, *, max_records: int = 10_000, prefix: str = "ir:idem:"
    ) -> None:
        self._client = client
        self._ttl = int(ttl_seconds)
        self._max = max_records
        self._prefix = prefix

    def _key(self, tenant: str, key: str) -> str:
        return key_name(self._prefix, (tenant, key))

    def _log(self, tenant: str) -> str:
        return key_name(self._prefix + "log:", (tenant,))

    def get(self, tenant: str, key: str) -> IdempotencyRecord | None:
        try:
            raw: Any = self._client.get(self._key(tenant, key))
        except RedisError as exc:
            raise BackendUnavailable(f"redis get failed: {type(exc).__name__}") from exc
        return None if raw is None else IdempotencyRecord.model_validate_json(raw)

    def put(self, tenant: str, key: str, record: IdempotencyRecord) -> None:
        name, log = self._key(tenant, key), self._log(tenant)
        now = time.time()
        try:
            pipe = self._client.pipeline()
            pipe.set(name, record.model_dump_json(), ex=self._ttl)
            pipe.zadd(log, {name: now})
            pipe.zremrangebyscore(log, "-inf", now - self._ttl)  # their records expired already
            pipe.expire(log, self._ttl)
            pipe.zcard(log)
            size = int(pipe.execute()[-1])
            if size > self._max:
                popped: Any = self._client.zpopmin(log, size - self._max)
                oldest = [member for member, _ in popped]
                if oldest:
                    self._client.delete(*oldest)
        except RedisError as exc:
            raise BackendUnavailable(f"redis set failed: {type(exc).__name__}") from exc

    def sweep(self, tenant: str) -> int:
        """Nothing to do: records expire in Redis and the cap holds at every ``put``."""
        return 0

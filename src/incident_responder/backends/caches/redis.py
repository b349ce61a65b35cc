"""Embeddings shared by every replica through Redis."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import redis
from redis.exceptions import RedisError

from incident_responder.backends.redis_client import key_name
from incident_responder.ports import Vector


class RedisVectorCache:
    """Embeddings shared by every replica, keyed by a hash of the text, with a TTL.

    Failures degrade to a miss: a cache must never fail a request.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        dim: int,
        ttl_seconds: int,
        prefix: str = "ir:emb:",
        on_lookup: Callable[[bool], None] | None = None,
    ) -> None:
        self._client = client
        self._dim = dim
        self._ttl = ttl_seconds
        self._prefix = prefix
        self._on_lookup = on_lookup

    @property
    def blocking(self) -> bool:
        return True

    def get(self, key: str) -> Vector | None:
        try:
            raw: Any = self._client.get(key_name(self._prefix, (key,)))
        except RedisError:
            raw = None
        value = None
        if isinstance(raw, bytes) and len(raw) == 4 * self._dim:
            value = np.frombuffer(raw, dtype=np.float32).copy()
        if self._on_lookup is not None:
            self._on_lookup(value is not None)
        return value

    def put(self, key: str, value: Vector) -> None:
        with contextlib.suppress(RedisError):
            self._client.set(
                key_name(self._prefix, (key,)), np.asarray(value, dtype=np.float32).tobytes(), ex=self._ttl
            )

"""Idempotency-Key handling with Stripe's semantics.

Same key + same body -> the stored response, nothing recorded again; same key +
different body -> 409. Requests with one key are serialized (across replicas with Redis), so the
second of two concurrent ones waits and then replays the first's response.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread

from incident_responder.errors import IdempotencyConflict, InvalidInput
from incident_responder.models import IdempotencyRecord, utcnow
from incident_responder.ports import IdempotencyStore, LockProvider

MAX_KEY_LENGTH = 255


class IdempotencyGuard:
    """Runs a request's handler at most once per tenant and Idempotency-Key (one at a time per
    key): the same body again gets the stored response, another body a 409; 5xx answers are not kept."""

    def __init__(self, repo: IdempotencyStore, locks: LockProvider) -> None:
        self._repo = repo
        self._locks = locks

    async def run(
        self,
        tenant: str,
        key: str | None,
        scope: str,
        body: bytes,
        handler: Callable[[], Awaitable[tuple[int, dict[str, Any]]]],
    ) -> tuple[int, dict[str, Any]]:
        if key is None:
            return await handler()
        if not 0 < len(key) <= MAX_KEY_LENGTH:
            raise InvalidInput(f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} characters")
        request_hash = hashlib.sha256(scope.encode() + b"\0" + body).hexdigest()
        scoped_key = f"{scope}\0{key}"
        async with self._locks.hold(tenant, scoped_key):
            record = await anyio.to_thread.run_sync(lambda: self._repo.get(tenant, scoped_key))
            if record is not None:
                if record.request_hash != request_hash:
                    raise IdempotencyConflict("this Idempotency-Key was used with a different request body")
                return record.status_code, record.body
            status, payload = await handler()
            if status < 500:
                new = IdempotencyRecord(
                    request_hash=request_hash, status_code=status, body=payload, created_at=utcnow()
                )
                await anyio.to_thread.run_sync(lambda: self._repo.put(tenant, scoped_key, new))
            return status, payload

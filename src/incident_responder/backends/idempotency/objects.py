"""Idempotency-Key records as documents of the object store (local disk or S3).

Layout under each tenant::

    <tenant>/idempotency/<sha256(key)>.json                     the record
    <tenant>/idempotency-log/<created ms>-<sha256(key)>.json    the records in time order (empty)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime

from incident_responder.models import IdempotencyRecord, utcnow
from incident_responder.ports import ObjectStore, ObjectWrite


class ObjectIdempotencyStore:
    """Idempotency records over the ObjectStore, expired after ``ttl_seconds`` and at most
    ``max_records`` per tenant (past that the oldest are forgotten early).

    Each record has a log entry named by its creation time, so that :meth:`sweep` finds the
    expired and excess records by listing the log alone (no read of every record)."""

    def __init__(
        self,
        objects: ObjectStore,
        ttl_seconds: float,
        *,
        max_records: int = 10_000,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._objects = objects
        self._ttl = ttl_seconds
        self._max = max_records
        self._clock = clock

    @staticmethod
    def _key(tenant: str, digest: str) -> str:
        return f"{tenant}/idempotency/{digest}.json"

    @staticmethod
    def _digest(key: str) -> str:
        return hashlib.sha256(key.encode("utf-8")).hexdigest()

    @staticmethod
    def _millis(moment: datetime) -> int:
        return int(moment.timestamp() * 1000)

    def get(self, tenant: str, key: str) -> IdempotencyRecord | None:
        found = self._objects.get(self._key(tenant, self._digest(key)))
        if found is None:
            return None
        record = IdempotencyRecord.model_validate_json(found.data)
        if (self._clock() - record.created_at).total_seconds() > self._ttl:
            return None
        return record

    def put(self, tenant: str, key: str, record: IdempotencyRecord) -> None:
        digest = self._digest(key)
        entry = f"{tenant}/idempotency-log/{self._millis(record.created_at):013d}-{digest}.json"
        self._objects.put_many(
            [
                ObjectWrite(self._key(tenant, digest), record.model_dump_json().encode("utf-8")),
                ObjectWrite(entry, b"{}"),
            ]
        )

    def sweep(self, tenant: str) -> int:
        """Delete the tenant's expired records and its oldest beyond ``max_records``; returns how
        many log entries went. A record written again since its entry stays (it has a newer one)."""
        entries = self._objects.list_keys(f"{tenant}/idempotency-log/")
        cutoff = self._millis(self._clock()) - int(self._ttl * 1000)
        excess = len(entries) - self._max
        removed = 0
        for position, entry in enumerate(entries):
            created, _, digest = entry.rsplit("/", 1)[1].removesuffix(".json").partition("-")
            if int(created) >= cutoff and position >= excess:
                break  # entries are in time order: the rest are live and within the cap
            found = self._objects.get(self._key(tenant, digest))
            if found is not None:
                stored = IdempotencyRecord.model_validate_json(found.data)
                if self._millis(stored.created_at) == int(created):
                    self._objects.delete(self._key(tenant, digest))
            self._objects.delete(entry)
            removed += 1
        return removed

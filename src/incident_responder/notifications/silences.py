"""Silences: reports that match one are recorded and deduplicated as ever, but notify nobody.

A silence names services (none: every service) and labels (each must equal the report's);
it is active from ``starts_at`` until ``ends_at``. Stored at ``<tenant>/silences/<id>.json``
and read through a short-lived per-tenant cache (a change reaches other replicas within
``ttl`` seconds; this process sees its own at once). Silences that ended over
``retention`` ago are removed when the next one is created.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from incident_responder.errors import InvalidInput, LimitReached, NotFound
from incident_responder.ids import new_silence_id
from incident_responder.models import utcnow
from incident_responder.ports import ObjectStore

SilenceState = Literal["pending", "active", "expired"]
_SILENCE_ID = re.compile(r"sil_[0-9a-z]{26}")


class Silence(BaseModel):
    """Who may not be notified, from when to when, and why."""

    silence_id: str
    services: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime
    ends_at: datetime
    comment: str = ""
    created_at: datetime = Field(default_factory=utcnow)

    def state(self, now: datetime) -> SilenceState:
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"

    def matches(self, service: str, labels: Mapping[str, str]) -> bool:
        if self.services and service not in self.services:
            return False
        return all(labels.get(k) == v for k, v in self.labels.items())


class SilenceBook:
    """A tenant's silences, and whether a report matches an active one."""

    def __init__(
        self,
        objects: ObjectStore,
        *,
        max_per_tenant: int = 1_000,
        retention: timedelta = timedelta(days=7),
        ttl: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._objects = objects
        self._max = max_per_tenant
        self._retention = retention
        self._ttl = ttl
        self._clock = clock
        self._cached: dict[str, tuple[float, list[Silence]]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(tenant: str, silence_id: str) -> str:
        return f"{tenant}/silences/{silence_id}.json"

    def all(self, tenant: str) -> list[Silence]:
        """Every stored silence of ``tenant``, oldest first (blocking on a cache miss)."""
        now = self._clock()
        with self._lock:
            hit = self._cached.get(tenant)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        found = []
        for key in self._objects.list_keys(f"{tenant}/silences/", limit=self._max + 1):
            stored = self._objects.get(key)
            if stored is not None:
                found.append(Silence.model_validate_json(stored.data))
        with self._lock:
            self._cached[tenant] = (now, found)
        return found

    def fresh(self, tenant: str) -> bool:
        """Whether :meth:`all` would answer from the cache (without blocking)."""
        with self._lock:
            hit = self._cached.get(tenant)
        return hit is not None and self._clock() - hit[0] < self._ttl

    def silenced(self, tenant: str, service: str, labels: Mapping[str, str], now: datetime) -> bool:
        """Whether an active silence of ``tenant`` matches a report of ``service`` with ``labels``."""
        return any(s.state(now) == "active" and s.matches(service, labels) for s in self.all(tenant))

    def create(
        self,
        tenant: str,
        *,
        services: list[str],
        labels: dict[str, str],
        starts_at: datetime | None,
        ends_at: datetime,
        comment: str,
    ) -> Silence:
        now = utcnow()
        starts = starts_at or now
        if ends_at <= starts:
            raise InvalidInput("ends_at: must be after starts_at")
        if ends_at <= now:
            raise InvalidInput("ends_at: must be in the future")
        kept = self._sweep(tenant, now)
        if len(kept) >= self._max:
            raise LimitReached(f"at most {self._max} silences per tenant; delete some first")
        silence = Silence(
            silence_id=new_silence_id(),
            services=services,
            labels=labels,
            starts_at=starts,
            ends_at=ends_at,
            comment=comment,
            created_at=now,
        )
        self._objects.put(self._key(tenant, silence.silence_id), silence.model_dump_json().encode())
        self._forget(tenant)
        return silence

    def get(self, tenant: str, silence_id: str) -> Silence:
        found = (
            self._objects.get(self._key(tenant, silence_id)) if _SILENCE_ID.fullmatch(silence_id) else None
        )
        if found is None:
            raise NotFound(f"silence {silence_id} not found")
        return Silence.model_validate_json(found.data)

    def delete(self, tenant: str, silence_id: str) -> None:
        self.get(tenant, silence_id)
        self._objects.delete(self._key(tenant, silence_id))
        self._forget(tenant)

    def _sweep(self, tenant: str, now: datetime) -> list[Silence]:
        """Remove silences that ended over ``retention`` ago; the others."""
        self._forget(tenant)
        kept = []
        for silence in self.all(tenant):
            if silence.ends_at < now - self._retention:
                self._objects.delete(self._key(tenant, silence.silence_id))
            else:
                kept.append(silence)
        self._forget(tenant)
        return kept

    def _forget(self, tenant: str) -> None:
        with self._lock:
            self._cached.pop(tenant, None)

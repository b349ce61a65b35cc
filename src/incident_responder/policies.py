"""Each tenant's policy: how its alerts resolve and flap, and how its notifications are paced.

Defaults come from the settings (``IR_ALERTS__*``, ``IR_NOTIFICATIONS__*``); a tenant
overrides any of them with ``PUT /v1/policy``, stored at ``<tenant>/meta/policy.json`` (only
the fields it set, so a changed default reaches every field a tenant left alone). Read
through a short-lived cache: a change reaches other replicas within ``ttl`` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from incident_responder.pipeline.lifecycle import ResolvePolicy, Rules
from incident_responder.ports import ObjectStore

ServiceName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,100}$")]
LabelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._/-]{1,100}$")]


class StormRule(BaseModel):
    """Announce a new ticket only once ``reports`` reports arrived within ``within`` seconds."""

    model_config = ConfigDict(extra="forbid")

    reports: int = Field(1, ge=1, le=10_000)
    within: float = Field(300.0, ge=1.0, le=86_400.0)


class TenantPolicy(BaseModel):
    """What a tenant decided about its alerts and notifications (the defaults where it did not)."""

    model_config = ConfigDict(extra="forbid")

    resolve: ResolvePolicy = "all"
    flapping_window: float = Field(900.0, ge=0.0, le=7 * 86_400.0)
    storm: StormRule = Field(default_factory=StormRule)
    storm_by_service: dict[ServiceName, StormRule] = Field(default_factory=dict, max_length=1_000)
    service_labels: list[LabelName] = Field(
        default_factory=lambda: ["service", "job", "app", "namespace", "alertname"],
        min_length=1,
        max_length=20,
    )
    update_interval: float = Field(60.0, ge=0.0, le=86_400.0)
    recommendation_wait: float = Field(10.0, ge=0.0, le=600.0)
    grafana_secret: str | None = Field(None, min_length=8, max_length=500)

    def rules(self, service: str, max_alerts: int) -> Rules:
        storm = self.storm_by_service.get(service, self.storm)
        return Rules(
            flapping_window=timedelta(seconds=self.flapping_window),
            storm_reports=storm.reports,
            storm_window=timedelta(seconds=storm.within),
            resolve_policy=self.resolve,
            max_alerts=max_alerts,
        )

    def shown(self) -> dict[str, Any]:
        """The policy as the API shows it: the secret masked."""
        out = self.model_dump(mode="json")
        if self.grafana_secret:
            out["grafana_secret"] = "********"
        return out


class PolicyBook:
    """Tenants' policies: the stored overrides over the defaults, cached for ``ttl`` seconds."""

    def __init__(
        self,
        objects: ObjectStore,
        defaults: TenantPolicy,
        *,
        max_alerts: int = 200,
        ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._objects = objects
        self._defaults = defaults
        self._max_alerts = max_alerts
        self._ttl = ttl
        self._clock = clock
        self._cached: dict[str, tuple[float, TenantPolicy]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(tenant: str) -> str:
        return f"{tenant}/meta/policy.json"

    def get(self, tenant: str) -> TenantPolicy:
        """The tenant's policy (blocking on a cache miss)."""
        now = self._clock()
        with self._lock:
            hit = self._cached.get(tenant)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        found = self._objects.get(self._key(tenant))
        policy = self._merged(TenantPolicy.model_validate_json(found.data) if found else None)
        with self._lock:
            self._cached[tenant] = (now, policy)
        return policy

    def put(self, tenant: str, given: TenantPolicy) -> TenantPolicy:
        """Store the fields the tenant set in ``given``; returns the policy now in force. A
        masked secret sent back as it was shown keeps the stored one."""
        fields = given.model_dump(exclude_unset=True)
        if fields.get("grafana_secret") == "********":
            fields["grafana_secret"] = self.get(tenant).grafana_secret
        stored = TenantPolicy.model_validate(fields)
        self._objects.put(self._key(tenant), stored.model_dump_json(include=set(fields)).encode())
        policy = self._merged(TenantPolicy.model_validate(fields))
        with self._lock:
            self._cached[tenant] = (self._clock(), policy)
        return policy

    def rules(self, tenant: str, service: str) -> Rules:
        """The lifecycle rules of ``tenant``'s tickets of ``service``."""
        return self.get(tenant).rules(service, self._max_alerts)

    def _merged(self, stored: TenantPolicy | None) -> TenantPolicy:
        if stored is None:
            return self._defaults
        base = self._defaults.model_dump()
        base.update(stored.model_dump(exclude_unset=True))
        return TenantPolicy.model_validate(base)

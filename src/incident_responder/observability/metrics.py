"""Prometheus metrics, on a registry owned by the app (never the global one)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from incident_responder.settings import Settings

_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


OTHER = "other"
VARIANTS = ("A", "B")  # the arms of the recommender A/B
NO_VARIANT = "none"
VOTES = ("helpful", "unhelpful")


class BoundedLabel:
    """The values of one label, admitted first come up to ``limit``; every later value reads
    ``other``. Series are never dropped once exported (counters must stay monotonic), so a flood
    of new names (one batch can carry 1,000 services) cannot grow ``/metrics`` without bound."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._admitted: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._admitted:
            return value
        with self._lock:
            if len(self._admitted) < self._limit:
                self._admitted.add(value)
                return value
        return OTHER


class Metrics:
    """Every Prometheus metric of the service, on a registry of its own; the service and tenant
    labels are bounded (:class:`BoundedLabel`)."""

    def __init__(
        self,
        *,
        tenant_label: bool = False,
        llm_price_per_million: tuple[float, float] = (0.0, 0.0),
        multiprocess_dir: Path | None = None,
        max_services: int = 100,
        max_tenants: int = 50,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # With several workers (serve --workers N) every worker writes its values to
        # files in this directory, and /metrics aggregates them all.
        self._multiprocess_dir = multiprocess_dir
        # A tenant label multiplies series by tenants: off unless the operator asks for it.
        self._tenant_label = tenant_label
        self._service = BoundedLabel(max_services)
        self._tenant = BoundedLabel(max_tenants)
        self._llm_prices = llm_price_per_million
        self.incidents = Counter(
            "ir_incidents_total",
            "Incident reports processed, by outcome and service",
            ["status", "service", "tenant"] if tenant_label else ["status", "service"],
            registry=self.registry,
        )
        self.shadow_decisions = Counter(
            "ir_shadow_decisions_total",
            "Reports the shadow (candidate) grouping decided again, by how it compared with the live one",
            ["verdict"],
            registry=self.registry,
        )
        self.match_methods = Counter(
            "ir_dedup_matches_total",
            "Reports merged into a ticket, by how they matched",
            ["method"],
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "ir_stage_seconds",
            "Time spent per pipeline stage",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "ir_http_requests_total",
            "HTTP requests by route and status code",
            ["route", "code"],
            registry=self.registry,
        )
        self.runbooks = Gauge(
            "ir_runbooks_loaded",
            "Runbooks preloaded in memory",
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.reconciled = Counter(
            "ir_reconciled_total",
            "Interrupted ticket/vector writes repaired at start-up",
            registry=self.registry,
        )

        self.backend_calls = Counter(
            "ir_backend_calls_total",
            "Backend calls by backend, operation and outcome",
            ["backend", "operation", "outcome"],
            registry=self.registry,
        )
        self.backend_seconds = Histogram(
            "ir_backend_call_seconds",
            "Backend call latency (retries included)",
            ["backend", "operation"],
            buckets=_STAGE_BUCKETS,
            registry=self.registry,
        )
        self.backend_retries = Counter(
            "ir_backend_retries_total", "Backend calls retried", ["backend"], registry=self.registry
        )
        self.breaker_state = Gauge(
            "ir_circuit_breaker_state",
            "0 closed, 1 half-open, 2 open",
            ["backend"],
            registry=self.registry,
            multiprocess_mode="max",  # with several workers: the worst state any of them sees
        )
        self.dlq_depth = Gauge(
            "ir_dlq_depth",
            "Reports waiting in the dead-letter queue",
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.dlq_events = Counter(
            "ir_dlq_events_total", "Dead-letter queue events", ["event"], registry=self.registry
        )
        self.rate_limited = Counter(
            "ir_rate_limited_total", "Requests refused with 429", registry=self.registry
        )

        self.llm_tokens = Counter(
            "ir_llm_tokens_total",
            "LLM tokens used, by direction (in = prompt, out = completion)",
            ["direction"],
            registry=self.registry,
        )
        self.llm_cost = Counter(
            "ir_llm_cost_usd_total",
            "Estimated LLM spend in USD (token counts x IR_PRICES__LLM_*)",
            registry=self.registry,
        )
        self.llm_calls = Counter(
            "ir_llm_calls_total", "LLM calls that returned usage", registry=self.registry
        )

        self.ticket_conflicts = Counter(
            "ir_ticket_write_conflicts_total",
            "Ticket compare-and-swap writes that lost to another writer and were retried",
            registry=self.registry,
        )
        self.cache_lookups = Counter(
            "ir_cache_lookups_total",
            "Cache lookups by cache and result",
            ["cache", "result"],
            registry=self.registry,
        )

        self.notifications = Counter(
            "ir_notifications_total",
            "Notification delivery attempts by channel kind and outcome (sent, retried, dead, refused)",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.notification_latency = Histogram(
            "ir_notification_latency_seconds",
            "From the event to its delivery, by channel kind (retries included)",
            ["kind"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
            registry=self.registry,
        )
        self.outbox_messages = Gauge(
            "ir_outbox_messages",
            "Notifications in the outbox by state (pending, dead; sent ones kept for a while)",
            ["state"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.events_pumped = Counter(
            "ir_ticket_events_total",
            "Ticket events turned into notifications, by kind",
            ["kind"],
            registry=self.registry,
        )

        # The recommender A/B (IR_EXPERIMENT__*): its variant label is A, B or none (no experiment).
        self.ab_recommendations = Counter(
            "ir_ab_recommendations_total",
            "Recommendations given to new tickets during a recommender A/B, by variant",
            ["variant"],
            registry=self.registry,
        )
        self.recommendation_votes = Counter(
            "ir_recommendation_votes_total",
            "Votes on tickets' recommendations, by recommender A/B variant (none: no A/B) and vote",
            ["variant", "vote"],
            registry=self.registry,
        )
        for variant in VARIANTS:  # both arms are shown from the start, at 0
            self.ab_recommendations.labels(variant)
            for vote in VOTES:
                self.recommendation_votes.labels(variant, vote)

    def cache_counter(self, cache: str) -> Callable[[bool], None]:
        hit, miss = self.cache_lookups.labels(cache, "hit"), self.cache_lookups.labels(cache, "miss")
        return lambda found: (hit if found else miss).inc()

    def count_shadow(self, verdict: str) -> None:
        """One shadow decision: agree, disagree, warming_up or dropped."""
        self.shadow_decisions.labels(verdict).inc()

    def count_incident(self, status: str, service: str, tenant: str) -> None:
        service = self._service(service)
        labels = (status, service, self._tenant(tenant)) if self._tenant_label else (status, service)
        self.incidents.labels(*labels).inc()

    def count_recommendation(self, variant: str) -> None:
        """A new ticket of the recommender A/B was given its arm's recommendation."""
        self.ab_recommendations.labels(variant if variant in VARIANTS else NO_VARIANT).inc()

    def count_vote(self, variant: str | None, helpful: bool) -> None:
        """A vote on a recommendation of ``variant`` (None: given outside an A/B)."""
        label = variant if variant in VARIANTS else NO_VARIANT
        self.recommendation_votes.labels(label, VOTES[0] if helpful else VOTES[1]).inc()

    def count_llm_tokens(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.llm_tokens.labels("in").inc(prompt_tokens)
        self.llm_tokens.labels("out").inc(completion_tokens)
        self.llm_calls.inc()
        price_in, price_out = self._llm_prices
        self.llm_cost.inc((prompt_tokens * price_in + completion_tokens * price_out) / 1_000_000)

    def render(self) -> bytes:
        return generate_latest(self.exposed())

    def exposed(self) -> CollectorRegistry:
        """What ``/metrics`` shows: this registry, or with several workers all of theirs."""
        if self._multiprocess_dir is None:
            return self.registry
        return multiprocess_registry(self._multiprocess_dir)


def multiprocess_registry(directory: Path) -> CollectorRegistry:
    """A registry that reads every worker's values from prometheus-client's multiprocess files."""
    from prometheus_client import multiprocess

    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined, path=str(directory))  # type: ignore[no-untyped-call]
    return combined


def metrics_for(settings: Settings) -> Metrics:
    prices = settings.prices
    return Metrics(
        multiprocess_dir=settings.prometheus_multiproc_dir,
        tenant_label=settings.metrics.tenant_label,
        max_services=settings.metrics.max_services,
        max_tenants=settings.metrics.max_tenants,
        llm_price_per_million=(prices.llm_input_per_million, prices.llm_output_per_million),
    )

"""The composition of the running service: settings + backends -> the pipeline (no
module-level singletons).

``build_services`` composes the optimized pipeline, or with ``IR_PERFORMANCE__NAIVE`` the
benchmark's baseline: the same stages without what makes them fast (no fingerprint
lookup, no remembered embeddings or tickets or recommendations, no micro-batching, each
report decided alone and written alone). The difference is in which parts are composed,
never in flags inside the stages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable
from dataclasses import dataclass

import anyio.to_thread
import httpx
import structlog
from opentelemetry.trace import Tracer

from incident_responder import __version__
from incident_responder.alerts.intake import AlertIntake
from incident_responder.alerts.links import AlertLinks
from incident_responder.alerts.reading import AlertReader
from incident_responder.backends import Backends, build_backends
from incident_responder.backends.notifiers import notifier_for
from incident_responder.errors import BackendUnavailable, ConfigError
from incident_responder.lru import LruCache
from incident_responder.models import IncidentResult
from incident_responder.notifications.channels import ChannelBook
from incident_responder.notifications.dispatcher import Backoff, Dispatcher
from incident_responder.notifications.events import EventLog
from incident_responder.notifications.pump import EventPump
from incident_responder.notifications.running import Wakeup
from incident_responder.notifications.silences import SilenceBook
from incident_responder.observability.metrics import Metrics
from incident_responder.pipeline.batching import MicroBatcher
from incident_responder.pipeline.coalescing import Coalescer, Grouper, OneAtATime
from incident_responder.pipeline.committing import RepeatWriter
from incident_responder.pipeline.corrections import Corrections
from incident_responder.pipeline.deciding import Decider, InFlight
from incident_responder.pipeline.dedup import Deduplicator, FingerprintLookup
from incident_responder.pipeline.late_recommendations import LateRecommendations
from incident_responder.pipeline.late_variants import late_recommendations
from incident_responder.pipeline.matching import DEFAULT_THRESHOLDS, MatchThresholds
from incident_responder.pipeline.normalize import LogNormalizer, normalizer_without
from incident_responder.pipeline.recommendation_cache import RecommendationCache
from incident_responder.pipeline.responder import Responder
from incident_responder.pipeline.runbook_index import RunbookIndex
from incident_responder.pipeline.runbooks import RunbookCatalog
from incident_responder.pipeline.shadow import Shadow
from incident_responder.pipeline.source_alerts import SourceAlerts
from incident_responder.pipeline.stages import StageRunner
from incident_responder.pipeline.tenant_vectors import TenantVectors
from incident_responder.pipeline.ticket_upkeep import TicketUpkeep
from incident_responder.pipeline.ticketing import TicketDesk
from incident_responder.policies import PolicyBook, StormRule, TenantPolicy
from incident_responder.ports import Embedder
from incident_responder.repositories import (
    IncidentRepository,
    PendingMarkers,
    RunbookRepository,
    TicketRepository,
)
from incident_responder.settings import DedupSettings, Settings, ShadowSettings

log = structlog.get_logger(__name__)


@dataclass
class Services:
    """The running service: its settings, backends, repositories and pipeline."""

    settings: Settings
    backends: Backends
    metrics: Metrics
    tickets: TicketRepository
    incidents: IncidentRepository
    desk: TicketDesk
    upkeep: TicketUpkeep
    catalog: RunbookCatalog
    responder: Responder
    normalizer: LogNormalizer
    stages: StageRunner
    policies: PolicyBook
    silences: SilenceBook
    events: EventLog
    alert_intake: AlertIntake
    channels: ChannelBook
    pump: EventPump
    dispatcher: Dispatcher
    events_written: Wakeup  # raised by ticket writes that recorded events
    messages_put: Wakeup  # raised by the pump when it put messages in the outbox
    http: httpx.AsyncClient  # the dispatcher's
    later: LateRecommendations | None  # an LLM asked after its ticket opened
    corrections: Corrections  # people's merges and splits
    shadow: Shadow | None = None  # a candidate grouping deciding beside the live one

    async def aclose(self) -> None:
        """Release what needs the event loop to close (the dispatcher's connections)."""
        await self.http.aclose()
        if self.shadow is not None:
            await self.shadow.close()
        if self.later is not None:
            await self.later.close()

    def tenants(self) -> list[str]:
        return self.backends.objects.list_prefixes("")

    async def replay_dead_letters(self, limit: int = 100) -> tuple[int, int]:
        """Apply waiting reports, oldest first; stops at the first backend still down.
        Returns (applied, still waiting)."""
        letters = self.backends.dead_letters
        applied = 0
        for letter in await anyio.to_thread.run_sync(lambda: letters.pending(limit)):
            try:
                await self.responder.replay(letter)
            except BackendUnavailable as exc:
                await anyio.to_thread.run_sync(letters.mark_failed, letter.incident_id, exc.message)
                break
            await anyio.to_thread.run_sync(letters.mark_done, letter.incident_id)
            self.metrics.dlq_events.labels("replayed").inc()
            applied += 1
        depth = await anyio.to_thread.run_sync(letters.depth)
        self.metrics.dlq_depth.set(depth)
        return applied, depth

    def sweep_idempotency(self) -> int:
        """Forget every tenant's expired and excess Idempotency-Key records (blocking)."""
        return sum(self.backends.idempotency.sweep(tenant) for tenant in self.tenants())

    def check_backends(self) -> dict[str, str]:
        """Ask every configured backend for a sign of life (blocking): name -> "ok" or the error."""
        report = {}
        for name, probe in self.backends.probes.items():
            try:
                probe()
                report[name] = "ok"
            except Exception as exc:  # any failure is a finding, not a crash
                report[name] = f"error: {getattr(exc, 'message', type(exc).__name__)}"
        return report

    def close(self) -> None:
        self.backends.close()


def thresholds_from(settings: Settings) -> MatchThresholds:
    """The calibrated defaults, with whatever the operator overrode."""
    return _overridden(DEFAULT_THRESHOLDS, settings.dedup)


def _overridden(base: MatchThresholds, given: DedupSettings | ShadowSettings) -> MatchThresholds:
    """``base`` with the thresholds ``given`` sets (those left unset keep ``base``'s)."""
    fields = given.model_dump(include={"auto_merge", "related", "template_similarity"})
    return dataclasses.replace(base, **{k: v for k, v in fields.items() if v is not None})


def _shadow(
    settings: Settings, table: tuple[LogNormalizer, str], backends: Backends, metrics: Metrics
) -> Shadow | None:
    """The candidate grouping that decides beside the live one, if one is configured."""
    candidate = settings.shadow
    if not candidate.enabled:
        return None
    return Shadow(
        normalizer=table[0],
        version=table[1],
        thresholds=_overridden(thresholds_from(settings), candidate),
        embedder=backends.embedder,
        search_limit=settings.dedup.search_limit,
        sample=candidate.sample,
        queue_size=candidate.queue,
        on_verdict=metrics.count_shadow,
        settings={"without_rules": candidate.without_rules},
    )


def default_policy(settings: Settings) -> TenantPolicy:
    """Every tenant's policy until it sets its own: the operator's settings."""
    alerts, notes = settings.alerts, settings.notifications
    return TenantPolicy(
        resolve=alerts.resolve_policy,
        flapping_window=alerts.flapping_window,
        storm=StormRule(reports=notes.storm_reports, within=notes.storm_window),
        service_labels=alerts.service_labels,
        update_interval=notes.update_interval,
        recommendation_wait=notes.recommendation_wait,
    )


def _library(settings: Settings) -> RunbookIndex:
    min_score = settings.retrieval.min_score
    return RunbookIndex() if min_score is None else RunbookIndex(min_score=min_score)


def build_services(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    metrics: Metrics | None = None,
    backends: Backends | None = None,
    tracer: Tracer | None = None,
) -> Services:
    """Open backends (unless given), compose the pipeline, preload runbooks and repair
    interrupted writes (blocking)."""
    try:
        normalizer, normalizer_version = normalizer_without(settings.dedup.without_rules)
        shadow_table = (
            normalizer_without(settings.shadow.without_rules)
            if settings.shadow.enabled and settings.shadow.without_rules is not None
            else (normalizer, normalizer_version)
        )
    except ValueError as exc:
        raise ConfigError(f"IR_DEDUP__WITHOUT_RULES / IR_SHADOW__WITHOUT_RULES: {exc}") from exc
    backends = backends or build_backends(settings, metrics=metrics, embedder=embedder)
    metrics = backends.metrics
    naive = settings.performance.naive
    perf = settings.performance
    stages = StageRunner(metrics, tracer)
    objects, index = backends.objects, backends.index
    tickets = TicketRepository(
        objects,
        cache=None if naive or not perf.ticket_cache_size else LruCache(perf.ticket_cache_size),
        on_lookup=metrics.cache_counter("ticket"),
    )
    incidents = IncidentRepository(objects)
    policies = PolicyBook(objects, default_policy(settings), max_alerts=settings.alerts.max_per_ticket)
    events = EventLog(objects)
    links = AlertLinks(objects, cache_size=0 if naive else 100_000)
    silences = SilenceBook(objects)
    channels = ChannelBook(objects, allow_private=settings.notifications.allow_private_targets)
    events_written, messages_put = Wakeup(), Wakeup()
    desk = TicketDesk(
        tickets=tickets,
        pending=PendingMarkers(objects),
        index=index,
        normalizer_version=normalizer_version,
        write_lock=backends.write_lock,
        on_conflict=metrics.ticket_conflicts.inc,
        occurrence_comments=settings.occurrence_comments,
        max_comments=settings.max_comments,
        rules=policies.rules,
        events=events,
        links=links,
        on_events=events_written,
        wants_events=lambda tenant: bool(channels.all(tenant)),
    )
    upkeep = TicketUpkeep(
        tickets=tickets,
        pending=PendingMarkers(objects),
        index=index,
        normalizer_version=normalizer_version,
        write_lock=backends.write_lock,
    )
    catalog = RunbookCatalog(
        repo=RunbookRepository(objects),
        index=index,
        embedder=backends.embedder,
        index_factory=lambda: _library(settings),
        top_k=settings.retrieval.top_k,
    )
    fingerprints = None
    if not naive:
        known = (
            LruCache[tuple[str, str, str], str](
                perf.fingerprint_cache_size, metrics.cache_counter("fingerprint")
            )
            if perf.fingerprint_cache_size
            else None
        )
        fingerprints = FingerprintLookup(index, known)
    recommendations = (
        RecommendationCache(
            perf.recommendation_cache_size,
            similarity=perf.recommendation_similarity,
            on_lookup=metrics.cache_counter("recommendation"),
        )
        if perf.recommendation_cache_size and not naive and not settings.experiment.running
        else None  # in a recommender A/B a reused answer could cross from one arm to the other
    )
    later = None
    if backends.recommender.remote and settings.recommender.asynchronous:
        later = late_recommendations(  # in a recommender A/B, one queue per arm
            backends.recommender,
            objects=objects,
            tickets=tickets,
            desk=desk,
            catalog=catalog,
            stages=stages,
            cache=recommendations,
            on_answer=events_written,
        )
    writer = RepeatWriter(desk=desk, incidents=incidents, stages=stages, max_group=1 if naive else 2_000)
    decider = Decider(
        dedup=Deduplicator(
            index=index,
            thresholds=thresholds_from(settings),
            search_limit=settings.dedup.search_limit,
            fingerprints=fingerprints,
            normalizer_version=normalizer_version,
        ),
        fingerprints=fingerprints,
        desk=desk,
        catalog=catalog,
        recommender=backends.offline_recommender if later is not None else backends.recommender,
        incidents=incidents,
        locks=backends.locks,
        writer=writer,
        stages=stages,
        recommendations=recommendations,
        later=later,
    )
    groups: Grouper[InFlight, Awaitable[IncidentResult]] = (
        OneAtATime(decider.decide) if naive else Coalescer(decider.decide_groups)
    )
    shadow = _shadow(settings, shadow_table, backends, metrics)
    responder = Responder(
        normalizer=normalizer,
        embedder=backends.embedder,
        decider=decider,
        groups=groups,
        upkeep=upkeep,
        catalog=catalog,
        incidents=incidents,
        dead_letters=backends.dead_letters,
        metrics=metrics,
        stages=stages,
        fingerprints=fingerprints,
        batcher=None
        if naive
        else MicroBatcher(
            backends.embedder,
            max_wait=perf.batch_max_wait_ms / 1000,
            max_batch=perf.batch_max_size,
            concurrency=settings.embedding.parallel_passes,
        ),
        vectors=TenantVectors(backends.vector_cache) if backends.vector_cache is not None else None,
        alerts=SourceAlerts(links=links, desk=desk, incidents=incidents),
        silences=silences,
        shadow=shadow,
    )
    alert_intake = AlertIntake(
        reader=AlertReader(
            service_labels=settings.alerts.service_labels,
            ignored_labels=settings.alerts.ignored_labels,
            max_log_chars=settings.max_log_chars,
        ),
        responder=responder,
        policies=policies,
        stages=stages,
        max_batch=settings.max_batch,
    )
    notes = settings.notifications
    pump = EventPump(
        events=events,
        tickets=tickets,
        channels=channels,
        policies=policies,
        outbox=backends.outbox,
        notifier_for=notifier_for,
        metrics=metrics,
        public_url=notes.public_url,
    )
    agent = {"User-Agent": f"incident-responder/{__version__}"}
    http = httpx.AsyncClient(follow_redirects=False, headers=agent)
    dispatcher = Dispatcher(
        outbox=backends.outbox,
        channels=channels,
        notifier_for=notifier_for,
        client=http,
        stages=stages,
        metrics=metrics,
        backoff=Backoff(base=notes.retry_base, cap=notes.retry_cap, give_up_after=notes.give_up_after),
        timeout=notes.timeout,
        concurrency=notes.concurrency,
        check_targets=not notes.allow_private_targets,
    )
    services = Services(
        settings=settings,
        backends=backends,
        metrics=metrics,
        tickets=tickets,
        incidents=incidents,
        desk=desk,
        upkeep=upkeep,
        catalog=catalog,
        responder=responder,
        normalizer=normalizer,
        stages=stages,
        policies=policies,
        silences=silences,
        events=events,
        alert_intake=alert_intake,
        channels=channels,
        pump=pump,
        dispatcher=dispatcher,
        events_written=events_written,
        messages_put=messages_put,
        http=http,
        later=later,
        shadow=shadow,
        corrections=Corrections(
            desk=desk,
            tickets=tickets,
            incidents=incidents,
            index=index,
            objects=objects,
            fingerprints=fingerprints,
            links=links,
            occurrence_comments=settings.occurrence_comments,
        ),
    )
    tenants = services.tenants()
    for tenant in tenants:
        repaired = upkeep.reconcile(tenant, backends.embedder)
        if repaired:
            metrics.reconciled.inc(repaired)
        services.corrections.recover(tenant)
        upkeep.renormalize(tenant, backends.embedder, normalizer.normalize)
    metrics.runbooks.set(catalog.preload(tenants))
    metrics.dlq_depth.set(backends.dead_letters.depth())
    log.info("service.ready", tenants=len(tenants))
    return services

"""Wires settings + backends into the running service (no module-level singletons)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import structlog
from opentelemetry.trace import Tracer

from incident_responder.backends import Backends, build_backends
from incident_responder.errors import BackendUnavailable
from incident_responder.metrics import Metrics, metrics_for
from incident_responder.pipeline.analyze import Analyzer
from incident_responder.pipeline.batching import MicroBatcher
from incident_responder.pipeline.caching import LruCache, TenantVectors
from incident_responder.pipeline.matching import DEFAULT_THRESHOLDS, MatchThresholds
from incident_responder.pipeline.normalize import NORMALIZER_VERSION, LogNormalizer
from incident_responder.pipeline.recommendation_cache import RecommendationCache
from incident_responder.pipeline.responder import KeyedLocks, Responder
from incident_responder.pipeline.retrieve import RunbookLibrary
from incident_responder.pipeline.runbooks import RunbookCatalog
from incident_responder.pipeline.ticketing import TicketDesk
from incident_responder.ports import DeadLetterQueue, Embedder, IdempotencyStore, LockProvider, WriteLock
from incident_responder.reliability.guarded import Guard, GuardedObjectStore, GuardedVectorIndex
from incident_responder.reliability.retry import RetryPolicy
from incident_responder.repositories import (
    IdempotencyRepository,
    IncidentRepository,
    PendingMarkers,
    RunbookRepository,
    TicketRepository,
)
from incident_responder.settings import LocalDeadLetterSettings, Settings, SqsDeadLetterSettings

log = structlog.get_logger(__name__)
_NIL_POINT = "00000000-0000-0000-0000-000000000000"


@dataclass
class Services:
    settings: Settings
    backends: Backends
    metrics: Metrics
    tickets: TicketRepository
    incidents: IncidentRepository
    desk: TicketDesk
    catalog: RunbookCatalog
    responder: Responder
    dead_letters: DeadLetterQueue
    guards: list[Guard]
    idempotency: IdempotencyStore
    locks: LockProvider
    closers: list[Callable[[], object]]
    redis: Any = None

    def tenants(self) -> list[str]:
        return self.backends.objects.list_prefixes("")

    async def replay_dead_letters(self, limit: int = 100) -> tuple[int, int]:
        """Apply waiting reports, oldest first; stops at the first backend still down.
        Returns (applied, still waiting)."""
        applied = 0
        for letter in await anyio.to_thread.run_sync(lambda: self.dead_letters.pending(limit)):
            try:
                await self.responder.replay(letter)
            except BackendUnavailable as exc:
                await anyio.to_thread.run_sync(self.dead_letters.mark_failed, letter.incident_id, exc.message)
                break
            await anyio.to_thread.run_sync(self.dead_letters.mark_done, letter.incident_id)
            self.metrics.dlq_events.labels("replayed").inc()
            applied += 1
        depth = await anyio.to_thread.run_sync(self.dead_letters.depth)
        self.metrics.dlq_depth.set(depth)
        return applied, depth

    def sweep_idempotency(self) -> int:
        """Forget every tenant's expired and excess Idempotency-Key records (blocking)."""
        return sum(self.idempotency.sweep(tenant) for tenant in self.tenants())

    def check_backends(self) -> dict[str, str]:
        """Ask every configured backend for a sign of life (blocking): name -> "ok" or the error."""
        probes: dict[str, Callable[[], object]] = {
            f"tickets:{self.settings.tickets.kind}": self.backends.objects.ping,
            f"vector:{self.settings.vector.kind}": lambda: self.backends.index.exists(_NIL_POINT),
            "dead_letters": self.dead_letters.depth,
        }
        if self.redis is not None:
            probes["redis"] = self.redis.ping
        report = {}
        for name, probe in probes.items():
            try:
                probe()
                report[name] = "ok"
            except Exception as exc:  # any failure is a finding, not a crash
                report[name] = f"error: {getattr(exc, 'message', type(exc).__name__)}"
        return report

    def close(self) -> None:
        self.backends.close()
        for close in self.closers:
            close()


def thresholds_from(settings: Settings) -> MatchThresholds:
    """The calibrated defaults, with whatever the operator overrode."""
    given = {
        k: v
        for k, v in settings.dedup.model_dump(
            include={"auto_merge", "related", "template_similarity"}
        ).items()
        if v is not None
    }
    return dataclasses.replace(DEFAULT_THRESHOLDS, **given)


def _library(settings: Settings) -> RunbookLibrary:
    min_score = settings.retrieval.min_score
    return RunbookLibrary() if min_score is None else RunbookLibrary(min_score=min_score)


def build_dead_letters(settings: Settings, redis_client: Any) -> DeadLetterQueue:
    cfg = settings.dead_letters
    match cfg:
        case LocalDeadLetterSettings():
            from incident_responder.reliability.dead_letters import SqliteDeadLetters

            return SqliteDeadLetters(settings.data_dir / "dead-letters.sqlite3")
        case SqsDeadLetterSettings():
            import boto3  # type: ignore[import-untyped]

            from incident_responder.backends.queues.sqs import SqsDeadLetters

            client = boto3.session.Session().client(
                "sqs",
                endpoint_url=cfg.endpoint_url,
                region_name=cfg.region,
                aws_access_key_id=cfg.access_key_id.get_secret_value() or None,
                aws_secret_access_key=cfg.secret_access_key.get_secret_value() or None,
            )
            return SqsDeadLetters(
                client=client,
                queue_url=cfg.queue_url,
                index=redis_client,
                visibility_timeout=cfg.visibility_timeout,
            )


def build_services(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    metrics: Metrics | None = None,
    backends: Backends | None = None,
    tracer: Tracer | None = None,
) -> Services:
    """Open backends (unless given), preload runbooks and repair interrupted writes (blocking)."""
    metrics = metrics or metrics_for(settings)
    backends = backends or build_backends(settings, embedder=embedder, metrics=metrics)
    r = settings.reliability
    retry = RetryPolicy(
        attempts=r.retry_attempts,
        initial_wait=r.retry_initial_wait,
        max_wait=r.retry_max_wait,
        deadline=r.retry_deadline,
    )
    guards = [  # the LLM's guard lives inside its FallbackRecommender (see build_backends)
        Guard.create(
            name,
            retry=retry,
            fail_max=r.breaker_fail_max,
            reset_timeout=r.breaker_reset_timeout,
            metrics=metrics,
        )
        for name in (f"tickets:{settings.tickets.kind}", f"vector:{settings.vector.kind}")
    ]
    objects = GuardedObjectStore(backends.objects, guards[0])
    index = GuardedVectorIndex(backends.index, guards[1])
    ttl = r.idempotency_ttl_hours * 3600
    redis_url = settings.redis.url.get_secret_value()
    locks: LockProvider
    write_lock: WriteLock | None = None  # one process: its group-commit writer is alone
    idempotency: IdempotencyStore
    closers: list[Callable[[], object]] = []
    redis_client = None
    if redis_url:
        from incident_responder.backends.redis.coordination import (
            RedisIdempotencyRepository,
            RedisLocks,
            RedisWriteLock,
            make_client,
        )

        redis_client = make_client(redis_url, timeout=settings.redis.timeout)
        closers.append(redis_client.close)
        lock_timeout = settings.redis.lock_timeout
        locks = RedisLocks(redis_client, timeout=lock_timeout)
        write_lock = RedisWriteLock(redis_client, timeout=lock_timeout, blocking_timeout=lock_timeout)
        idempotency = RedisIdempotencyRepository(redis_client, ttl, max_records=r.idempotency_max_records)

    else:
        locks = KeyedLocks()
        idempotency = IdempotencyRepository(objects, ttl, max_records=r.idempotency_max_records)
    dead_letters = build_dead_letters(settings, redis_client)
    perf = settings.performance
    tickets = TicketRepository(
        objects,
        cache_size=0 if perf.naive else perf.ticket_cache_size,
        on_lookup=metrics.cache_counter("ticket"),
    )
    incidents = IncidentRepository(objects)
    desk = TicketDesk(
        tickets=tickets,
        pending=PendingMarkers(objects),
        index=index,
        normalizer_version=NORMALIZER_VERSION,
        write_lock=write_lock,
        on_conflict=metrics.ticket_conflicts.inc,
        occurrence_comments=settings.occurrence_comments,
        max_comments=settings.max_comments,
    )
    catalog = RunbookCatalog(
        repo=RunbookRepository(objects),
        index=index,
        embedder=backends.embedder,
        library_factory=lambda: _library(settings),
        top_k=settings.retrieval.top_k,
    )
    model: Embedder = backends.embedder
    known: LruCache[tuple[str, str, str], str] | None = None
    batcher = None
    vectors: TenantVectors | None = None
    if not perf.naive:
        if redis_client is not None:  # shared by every replica
            from incident_responder.backends.redis.coordination import RedisVectorCache

            shared = RedisVectorCache(
                redis_client,
                dim=model.dim,
                ttl_seconds=7 * 24 * 3600,
                on_lookup=metrics.cache_counter("embedding"),
            )
            vectors = TenantVectors(shared, blocking=True)
        elif perf.embedding_cache_size:
            vectors = TenantVectors(LruCache(perf.embedding_cache_size, metrics.cache_counter("embedding")))
        if perf.fingerprint_cache_size:
            known = LruCache(perf.fingerprint_cache_size, metrics.cache_counter("fingerprint"))
        batcher = MicroBatcher(
            model,
            max_wait=perf.batch_max_wait_ms / 1000,
            max_batch=perf.batch_max_size,
            concurrency=settings.embedding.parallel_passes,
        )
    responder = Responder(
        normalizer=LogNormalizer(),
        embedder=model,
        analyzer=Analyzer(
            index=index,
            thresholds=thresholds_from(settings),
            search_limit=settings.dedup.search_limit,
            fast_path=not perf.naive,
            known=known,
        ),
        desk=desk,
        catalog=catalog,
        recommender=backends.recommender,
        incidents=incidents,
        dead_letters=dead_letters,
        metrics=metrics,
        locks=locks,
        tracer=tracer,
        batcher=batcher,
        vectors=vectors,
        group_commit=not perf.naive,
        recommendations=(
            RecommendationCache(
                perf.recommendation_cache_size,
                similarity=perf.recommendation_similarity,
                on_lookup=metrics.cache_counter("recommendation"),
            )
            if perf.recommendation_cache_size and not perf.naive
            else None
        ),
    )
    services = Services(
        settings=settings,
        backends=backends,
        metrics=metrics,
        tickets=tickets,
        incidents=incidents,
        desk=desk,
        catalog=catalog,
        responder=responder,
        dead_letters=dead_letters,
        guards=guards,
        idempotency=idempotency,
        locks=locks,
        closers=closers,
        redis=redis_client,
    )
    tenants = services.tenants()
    for tenant in tenants:
        repaired = desk.reconcile(tenant, backends.embedder)
        if repaired:
            metrics.reconciled.inc(repaired)
    metrics.runbooks.set(catalog.preload(tenants))
    metrics.dlq_depth.set(dead_letters.depth())
    log.info("service.ready", tenants=len(tenants))
    return services

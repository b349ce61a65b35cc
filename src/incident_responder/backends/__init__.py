"""Adapters for every port, and ``build_backends``: the one place they are chosen.

Each port has its adapters side by side in one package (``objects/{local,s3}``,
``vector/{qdrant_edge,qdrant_server,pgvector,pinecone}``, ``locks/{memory,redis}``,
``idempotency/{objects,redis}``, ``dead_letters/{sqlite,sqs}``, ``outboxes/{sqlite,redis}``,
``caches/{memory,redis}``, ``recommenders/{offline,openai_chat,fallback,split}``, ``embedding/``,
``notifiers/{slack,pagerduty,webhook}``); ``build_backends`` picks one of each from the
settings, and puts the stores behind retries and circuit breakers. With a recommender A/B
running (``IR_EXPERIMENT__B_SHARE``), both recommenders sit behind one ``split``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from incident_responder.backends.recommenders.offline import OfflineRecommender
from incident_responder.backends.recommenders.split import SplitRecommender
from incident_responder.observability.metrics import Metrics, metrics_for
from incident_responder.ports import (
    DeadLetterQueue,
    Embedder,
    IdempotencyStore,
    LockProvider,
    ObjectStore,
    Outbox,
    Recommender,
    VectorCache,
    VectorIndex,
    WriteLock,
)
from incident_responder.reliability.guarded import Guard, GuardedObjectStore, GuardedVectorIndex
from incident_responder.reliability.retry import RetryPolicy
from incident_responder.settings import (
    DeadLetterSettings,
    EmbeddedVectorSettings,
    LocalDeadLetterSettings,
    LocalTicketSettings,
    PgVectorSettings,
    PineconeVectorSettings,
    QdrantVectorSettings,
    RecommenderChoice,
    S3TicketSettings,
    Settings,
    SqsDeadLetterSettings,
    TicketSettings,
    VectorSettings,
)

_NIL_POINT = "00000000-0000-0000-0000-000000000000"
EMBEDDING_TTL_SECONDS = 7 * 24 * 3600  # of embeddings remembered in Redis


@dataclass
class Backends:
    """Every adapter the service runs on, as ``build_backends`` chose them."""

    objects: ObjectStore  # behind retries and a circuit breaker
    index: VectorIndex  # behind retries and a circuit breaker
    embedder: Embedder
    recommender: Recommender
    offline_recommender: Recommender  # in process: answers at once (the LLM's fallback, or A/B arms')
    locks: LockProvider
    write_lock: WriteLock | None  # None: this process is the only writer
    idempotency: IdempotencyStore
    dead_letters: DeadLetterQueue
    outbox: Outbox
    vector_cache: VectorCache | None  # None: embeddings are not remembered
    metrics: Metrics
    guards: list[Guard]
    probes: dict[str, Callable[[], object]]  # backend -> a call that fails unless it answers
    closers: list[Callable[[], object]] = field(default_factory=list)

    def close(self) -> None:
        self.index.close()
        for close in self.closers:
            close()


def build_backends(
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    embedder: Embedder | None = None,
    objects: ObjectStore | None = None,
    index: VectorIndex | None = None,
) -> Backends:
    """Open every configured backend (blocking: loads the model, opens the index). A given
    ``embedder``, ``objects`` or ``index`` is used instead of the configured one (tests, tools)."""
    metrics = metrics or metrics_for(settings)
    if embedder is None:
        embedder = build_embedder(settings)
    raw_objects = objects if objects is not None else build_object_store(settings.tickets, settings.data_dir)
    raw_index = (
        index if index is not None else build_vector_index(settings.vector, settings.data_dir, embedder.dim)
    )
    r = settings.reliability
    retry = RetryPolicy(
        attempts=r.retry_attempts,
        initial_wait=r.retry_initial_wait,
        max_wait=r.retry_max_wait,
        deadline=r.retry_deadline,
    )
    guards = [  # the LLM's guard lives inside its FallbackRecommender
        Guard.create(
            name,
            retry=retry,
            fail_max=r.breaker_fail_max,
            reset_timeout=r.breaker_reset_timeout,
            metrics=metrics,
        )
        for name in (f"tickets:{settings.tickets.kind}", f"vector:{settings.vector.kind}")
    ]
    guarded_objects = GuardedObjectStore(raw_objects, guards[0])
    guarded_index = GuardedVectorIndex(raw_index, guards[1])
    probes: dict[str, Callable[[], object]] = {
        f"tickets:{settings.tickets.kind}": raw_objects.ping,
        f"vector:{settings.vector.kind}": lambda: raw_index.exists(_NIL_POINT),
    }
    closers: list[Callable[[], object]] = []
    ttl = r.idempotency_ttl_hours * 3600
    perf = settings.performance
    redis_url = settings.redis.url.get_secret_value()
    locks: LockProvider
    write_lock: WriteLock | None = None
    idempotency: IdempotencyStore
    vector_cache: VectorCache | None = None
    redis_client: Any = None
    if redis_url:
        from incident_responder.backends.caches.redis import RedisVectorCache
        from incident_responder.backends.idempotency.redis import RedisIdempotencyStore
        from incident_responder.backends.locks.redis import RedisLocks, RedisWriteLock
        from incident_responder.backends.redis_client import make_client

        redis_client = make_client(redis_url, timeout=settings.redis.timeout)
        closers.append(redis_client.close)
        probes["redis"] = redis_client.ping
        lock_timeout = settings.redis.lock_timeout
        locks = RedisLocks(redis_client, timeout=lock_timeout)
        write_lock = RedisWriteLock(redis_client, timeout=lock_timeout, blocking_timeout=lock_timeout)
        idempotency = RedisIdempotencyStore(redis_client, ttl, max_records=r.idempotency_max_records)
        if not perf.naive:  # shared by every replica
            vector_cache = RedisVectorCache(
                redis_client,
                dim=embedder.dim,
                ttl_seconds=EMBEDDING_TTL_SECONDS,
                on_lookup=metrics.cache_counter("embedding"),
            )
    else:
        from incident_responder.backends.caches.memory import MemoryVectorCache
        from incident_responder.backends.idempotency.objects import ObjectIdempotencyStore
        from incident_responder.backends.locks.memory import MemoryLocks

        locks = MemoryLocks()
        idempotency = ObjectIdempotencyStore(guarded_objects, ttl, max_records=r.idempotency_max_records)
        if not perf.naive and perf.embedding_cache_size:
            vector_cache = MemoryVectorCache(perf.embedding_cache_size, metrics.cache_counter("embedding"))
    dead_letters = build_dead_letters(settings.dead_letters, settings.data_dir, redis_client)
    probes["dead_letters"] = dead_letters.depth
    outbox = build_outbox(settings.notifications.outbox, settings.data_dir, redis_client)
    offline: Recommender = OfflineRecommender(max_steps=settings.recommender.max_steps)
    recommender = build_recommender(settings, metrics, offline)
    if settings.experiment.running:
        recommender, offline = build_experiment(settings, metrics, recommender, offline)
    probes["outbox"] = outbox.counts
    closers.append(outbox.close)
    return Backends(
        objects=guarded_objects,
        index=guarded_index,
        embedder=embedder,
        recommender=recommender,
        offline_recommender=offline,
        locks=locks,
        write_lock=write_lock,
        idempotency=idempotency,
        dead_letters=dead_letters,
        outbox=outbox,
        vector_cache=vector_cache,
        metrics=metrics,
        guards=guards,
        probes=probes,
        closers=closers,
    )


def build_embedder(settings: Settings) -> Embedder:
    from incident_responder.backends.embedding.bert import load_embedder

    e = settings.embedding
    return load_embedder(
        e.model_path,
        batch_size=e.batch_size,
        threads=e.threads,
        runtime=e.runtime,
        onnx_cache_dir=settings.onnx_cache_dir,
        pass_tokens=e.pass_tokens,
        nice=e.nice,
    )


def build_recommender(
    settings: Settings,
    metrics: Metrics,
    offline: Recommender,
    *,
    choice: RecommenderChoice | None = None,
    guard_name: str = "llm:openai",
) -> Recommender:
    """``offline``, or an LLM behind a breaker with ``offline`` as its fallback: as ``choice``
    says (default: ``settings.recommender``)."""
    rc = choice or settings.recommender
    if rc.kind == "offline":
        return offline
    from incident_responder.backends.recommenders.fallback import FallbackRecommender
    from incident_responder.backends.recommenders.openai_chat import (
        OpenAIChatRecommender,
        TokenUsage,
        make_openai_client,
    )
    from incident_responder.reliability.guarded import GuardedRecommender

    client = make_openai_client(
        base_url=rc.base_url,
        api_key=rc.api_key.get_secret_value() or None,
        timeout=rc.timeout,
        max_retries=rc.max_retries,
    )
    llm = OpenAIChatRecommender(
        client=client,
        model=rc.model,
        max_output_tokens=rc.max_output_tokens,
        temperature=rc.temperature,
        usage=TokenUsage(on_usage=metrics.count_llm_tokens),
    )
    r = settings.reliability
    guard = Guard.create(
        guard_name,
        retry=RetryPolicy(attempts=1),  # the SDK retries on its own
        fail_max=r.breaker_fail_max,
        reset_timeout=r.breaker_reset_timeout,
        metrics=metrics,
    )
    # The offline recommender answers whenever the LLM fails, is slow or its circuit is open.
    return FallbackRecommender(GuardedRecommender(llm, guard), offline)


def build_experiment(
    settings: Settings, metrics: Metrics, a: Recommender, a_offline: Recommender
) -> tuple[SplitRecommender, SplitRecommender]:
    """The recommender A/B: ``a`` (the configured recommender) or B for each new ticket, and the
    same split of their in-process stand-ins (what a ticket has at once while an LLM is asked
    after it opened). Recommendations given are counted per variant."""
    ex = settings.experiment
    b_offline = OfflineRecommender(max_steps=ex.recommender_b.max_steps)
    b = build_recommender(settings, metrics, b_offline, choice=ex.recommender_b, guard_name="llm:openai-b")
    counted = metrics.count_recommendation
    return (
        SplitRecommender(a, b, ex.b_share, on_answer=counted),
        SplitRecommender(
            a_offline if a.remote else a, b_offline if b.remote else b, ex.b_share, on_answer=counted
        ),
    )


def build_object_store(cfg: TicketSettings, data_dir: Path) -> ObjectStore:
    match cfg:
        case LocalTicketSettings():
            from incident_responder.backends.objects.local import LocalObjectStore

            return LocalObjectStore(data_dir / "objects")
        case S3TicketSettings():
            from incident_responder.backends.objects.s3 import S3ObjectStore, make_s3_client

            client = make_s3_client(
                endpoint_url=cfg.endpoint_url,
                region=cfg.region,
                access_key_id=cfg.access_key_id.get_secret_value() or None,
                secret_access_key=cfg.secret_access_key.get_secret_value() or None,
                connect_timeout=cfg.connect_timeout,
                read_timeout=cfg.read_timeout,
                max_attempts=cfg.max_attempts,
            )
            return S3ObjectStore(bucket=cfg.bucket, prefix=cfg.prefix, client=client)


def build_vector_index(cfg: VectorSettings, data_dir: Path, dim: int) -> VectorIndex:
    match cfg:
        case EmbeddedVectorSettings():
            from incident_responder.backends.vector.qdrant_edge import QdrantEdgeIndex

            return QdrantEdgeIndex(
                data_dir / "index", dim, float16=cfg.float16, flush_seconds=cfg.flush_seconds
            )
        case QdrantVectorSettings():
            from qdrant_client import QdrantClient

            from incident_responder.backends.vector.qdrant_server import QdrantServerIndex

            client = QdrantClient(
                url=cfg.url, api_key=cfg.api_key.get_secret_value() or None, timeout=int(cfg.timeout)
            )
            return QdrantServerIndex(client=client, collection=cfg.collection, dim=dim)
        case PgVectorSettings():
            from incident_responder.backends.vector.pgvector import PgVectorIndex

            return PgVectorIndex(
                dsn=cfg.dsn.get_secret_value(),
                table=cfg.table,
                dim=dim,
                max_connections=cfg.max_connections,
                statement_timeout_ms=cfg.statement_timeout_ms,
            )
        case PineconeVectorSettings():
            from incident_responder.backends.vector.pinecone import PineconeIndex

            return PineconeIndex(
                index_host=cfg.index_host,
                api_key=cfg.api_key.get_secret_value(),
                namespace_prefix=cfg.namespace_prefix,
                dim=dim,
                timeout=cfg.timeout,
            )


def build_outbox(kind: str, data_dir: Path, redis_client: Any) -> Outbox:
    if kind == "redis":
        from incident_responder.backends.outboxes.redis import RedisOutbox

        return RedisOutbox(redis_client)
    from incident_responder.backends.outboxes.sqlite import SqliteOutbox

    return SqliteOutbox(data_dir / "outbox.sqlite3")


def build_dead_letters(cfg: DeadLetterSettings, data_dir: Path, redis_client: Any) -> DeadLetterQueue:
    match cfg:
        case LocalDeadLetterSettings():
            from incident_responder.backends.dead_letters.sqlite import SqliteDeadLetters

            return SqliteDeadLetters(data_dir / "dead-letters.sqlite3")
        case SqsDeadLetterSettings():
            import boto3  # type: ignore[import-untyped]

            from incident_responder.backends.dead_letters.sqs import SqsDeadLetters

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

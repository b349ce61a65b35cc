"""Adapters for every port, and ``build_backends``: the one place they are chosen."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from incident_responder.metrics import Metrics
from incident_responder.ports import Embedder, ObjectStore, Recommender, VectorIndex
from incident_responder.settings import (
    EmbeddedVectorSettings,
    LocalTicketSettings,
    PgVectorSettings,
    PineconeVectorSettings,
    QdrantVectorSettings,
    S3TicketSettings,
    Settings,
    TicketSettings,
    VectorSettings,
)


@dataclass
class Backends:
    objects: ObjectStore
    index: VectorIndex
    embedder: Embedder
    recommender: Recommender

    def close(self) -> None:
        self.index.close()


def build_backends(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    metrics: Metrics | None = None,
) -> Backends:
    """Open every configured backend (blocking: loads the model, opens the index)."""
    if embedder is None:
        from incident_responder.backends.embedding.bert import load_embedder

        embedder = load_embedder(
            settings.embedding.model_path,
            batch_size=settings.embedding.batch_size,
            threads=settings.embedding.threads,
            runtime=settings.embedding.runtime,
            onnx_cache_dir=settings.embedding.onnx_cache_dir,
            pass_tokens=settings.embedding.pass_tokens,
            nice=settings.embedding.nice,
        )

    objects = build_object_store(settings.tickets, settings.data_dir)
    index = build_vector_index(settings.vector, settings.data_dir, embedder.dim)

    from incident_responder.pipeline.recommend import OfflineRecommender

    rc = settings.recommender
    offline = OfflineRecommender(max_steps=rc.max_steps)
    match rc.kind:
        case "offline":
            recommender: Recommender = offline
        case "openai":
            from incident_responder.backends.llm.fallback import FallbackRecommender
            from incident_responder.backends.llm.openai_chat import (
                OpenAIChatRecommender,
                TokenUsage,
                make_openai_client,
            )

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
                usage=TokenUsage(on_usage=metrics.count_llm_tokens if metrics else None),
            )
            guarded: Recommender = llm
            if metrics is not None:
                from incident_responder.reliability.guarded import Guard, GuardedRecommender
                from incident_responder.reliability.retry import RetryPolicy

                r = settings.reliability
                guard = Guard.create(
                    "llm:openai",
                    retry=RetryPolicy(attempts=1),  # the SDK retries on its own
                    fail_max=r.breaker_fail_max,
                    reset_timeout=r.breaker_reset_timeout,
                    metrics=metrics,
                )
                guarded = GuardedRecommender(llm, guard)
            # The offline recommender answers whenever the LLM fails, is slow or its circuit is open.
            recommender = FallbackRecommender(guarded, offline)

    return Backends(objects=objects, index=index, embedder=embedder, recommender=recommender)


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

"""Adapters for every port, and ``build_backends``: the one place they are chosen."""

from __future__ import annotations

from dataclasses import dataclass

from incident_responder.metrics import Metrics
from incident_responder.ports import Embedder, ObjectStore, Recommender, VectorIndex
from incident_responder.settings import Settings


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
        from incident_responder.backends.embedding.sentence_transformer import SentenceTransformerEmbedder

        embedder = SentenceTransformerEmbedder(
            settings.embedding.model_path,
            batch_size=settings.embedding.batch_size,
            threads=settings.embedding.threads,
        )

    match settings.tickets.kind:
        case "local":
            from incident_responder.backends.objects.local import LocalObjectStore

            objects: ObjectStore = LocalObjectStore(settings.data_dir / "objects")

    match settings.vector.kind:
        case "qdrant-edge":
            from incident_responder.backends.vector.qdrant_edge import QdrantEdgeIndex

            index: VectorIndex = QdrantEdgeIndex(settings.data_dir / "index", embedder.dim)

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

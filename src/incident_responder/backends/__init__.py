"""Adapters for every port, and ``build_backends``: the one place they are chosen."""

from __future__ import annotations

from dataclasses import dataclass

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


def build_backends(settings: Settings, *, embedder: Embedder | None = None) -> Backends:
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

    match settings.recommender.kind:
        case "offline":
            from incident_responder.pipeline.recommend import OfflineRecommender

            recommender: Recommender = OfflineRecommender(max_steps=settings.recommender.max_steps)

    return Backends(objects=objects, index=index, embedder=embedder, recommender=recommender)

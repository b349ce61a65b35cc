"""Dedup: batched fingerprint lookups (one index query answers what one query per fingerprint
would), and a deduplicator composed without them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from incident_responder.backends.vector.qdrant_edge import QdrantEdgeIndex
from incident_responder.lru import LruCache
from incident_responder.pipeline.dedup import Deduplicator, FingerprintLookup
from incident_responder.pipeline.matching import MatchThresholds
from incident_responder.pipeline.normalize import LogNormalizer
from incident_responder.ports import VectorFilter, VectorHit, VectorIndex, VectorPoint

DIM = 8


class CountingIndex:
    """The real index, counting the ``find`` queries it answers."""

    def __init__(self, inner: VectorIndex) -> None:
        self.inner = inner
        self.finds: list[VectorFilter] = []

    def find(self, where: VectorFilter, limit: int) -> list[VectorHit]:
        self.finds.append(where)
        return self.inner.find(where, limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def index(tmp_path: Path) -> Iterator[CountingIndex]:
    inner = QdrantEdgeIndex(tmp_path / "index", DIM, flush_seconds=0)
    yield CountingIndex(inner)
    inner.close()


def _store(index: CountingIndex, rows: Sequence[tuple[str, str, str]]) -> None:
    """(service, fingerprint, ticket) per point, as the service writes incident points;
    point ids in row order (a scroll returns points by id)."""
    rng = np.random.default_rng(7)
    index.inner.upsert(
        [
            VectorPoint(
                str(uuid.UUID(int=n + 1)),
                rng.standard_normal(DIM).astype(np.float32),
                {"tenant": "t", "kind": "incident", "service": s, "fingerprint": f, "ticket_id": ticket},
            )
            for n, (s, f, ticket) in enumerate(rows)
        ]
    )


def _lookup(
    index: CountingIndex, known: LruCache[tuple[str, str, str], str] | None = None
) -> FingerprintLookup:
    return FingerprintLookup(index, known)  # type: ignore[arg-type]


def test_one_query_answers_every_fingerprint_of_a_service(index: CountingIndex) -> None:
    _store(index, [("api", "f1", "T1"), ("api", "f2", "T2"), ("api", "f2", "T2"), ("db", "f3", "T3")])
    known: LruCache[tuple[str, str, str], str] = LruCache(100)
    lookup = _lookup(index, known)
    found = lookup.find_many("t", [("api", f) for f in ["f1", "f2", "f3", "f9", "f1"]])
    assert found == {("api", "f1"): "T1", ("api", "f2"): "T2"}  # f3 is another service's, f9 nobody's
    assert len(index.finds) == 1
    assert known.get(("t", "api", "f2")) == "T2" and known.get(("t", "api", "f9")) is None
    one_by_one = {f: lookup.find("t", "api", f) for f in ["f1", "f2", "f3", "f9"]}
    assert {("api", f): t for f, t in one_by_one.items() if t is not None} == found


def test_a_cut_off_answer_is_completed_one_by_one(index: CountingIndex) -> None:
    # f1 has 9 points (as after many races between processes): more than the batched query
    # reads (4 per fingerprint asked), and they come first, so f2's point is cut off.
    _store(index, [("api", "f1", "T1")] * 9 + [("api", "f2", "T2")])
    found = _lookup(index).find_many("t", [("api", "f1"), ("api", "f2")])
    assert found == {("api", "f1"): "T1", ("api", "f2"): "T2"}
    assert [w.any_of.get("fingerprint") for w in index.finds] == [["f1", "f2"], None]
    assert index.finds[1].equals["fingerprint"] == "f2"


def test_nothing_asked_asks_nothing_and_without_a_lookup_no_fingerprint_is_asked(
    index: CountingIndex,
) -> None:
    _store(index, [("api", "f1", "T1")])
    assert _lookup(index).find_many("t", []) == {}
    assert index.finds == []
    plain = Deduplicator(
        index=index,  # type: ignore[arg-type]
        thresholds=MatchThresholds(template_similarity=0.9, auto_merge=0.9, related=0.7),
        search_limit=10,
    )
    norm = LogNormalizer().normalize("disk full on /data")
    decision = plain.decide("t", "api", norm, np.ones(DIM, dtype=np.float32))
    assert index.finds == [] and decision.method != "fingerprint"

"""RecommendationCache: reuse only within one runbook context and above the similarity."""

from __future__ import annotations

import numpy as np
import pytest

from incident_responder.models import Recommendation, RunbookChunk
from incident_responder.pipeline.recommendation_cache import RecommendationCache
from incident_responder.ports import Vector

CHUNKS = [
    RunbookChunk(runbook_id="db", chunk_no=0, heading="Mitigation", text="1. Restart the pooler."),
    RunbookChunk(runbook_id="disk", chunk_no=1, heading="Mitigation", text="1. Rotate logs."),
]
TITLES = {"db": "DB refused", "disk": "Disk full"}


def unit(*xs: float) -> Vector:
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def rec(summary: str) -> Recommendation:
    steps = ["Restart [runbook: db]"]
    return Recommendation(summary=summary, steps=steps, source="llm:x", runbook_ids=["db"])


def test_hit_only_above_the_similarity_and_counted() -> None:
    lookups: list[bool] = []
    cache = RecommendationCache(10, similarity=0.9, on_lookup=lookups.append)
    assert cache.get("t", CHUNKS, TITLES, unit(1, 0)) is None
    cache.put("t", CHUNKS, TITLES, unit(1, 0), rec("a"))
    near, far = unit(1, 0.4), unit(1, 0.6)  # cosine 0.93 and 0.86
    found = cache.get("t", CHUNKS, TITLES, near)
    assert found is not None and found.summary == "a"
    assert cache.get("t", CHUNKS, TITLES, far) is None
    assert lookups == [False, True, False]


def test_the_closest_remembered_incident_answers() -> None:
    cache = RecommendationCache(10, similarity=0.5)
    cache.put("t", CHUNKS, TITLES, unit(1, 0, 0), rec("x-axis"))
    cache.put("t", CHUNKS, TITLES, unit(0, 1, 0), rec("y-axis"))
    found = cache.get("t", CHUNKS, TITLES, unit(0.3, 1, 0))
    assert found is not None and found.summary == "y-axis"


@pytest.mark.parametrize(
    ("tenant", "chunks", "titles"),
    [
        ("other-tenant", CHUNKS, TITLES),
        ("t", CHUNKS[:1], TITLES),  # fewer chunks
        ("t", CHUNKS[::-1], TITLES),  # another ranking
        ("t", [CHUNKS[0].model_copy(update={"text": "1. Restart the pooler. 2. Page."}), CHUNKS[1]], TITLES),
        ("t", [CHUNKS[0].model_copy(update={"heading": "Fix"}), CHUNKS[1]], TITLES),
        ("t", CHUNKS, {**TITLES, "db": "Database refused"}),
    ],
    ids=["tenant", "fewer_chunks", "order", "edited_text", "heading", "title"],
)
def test_any_other_context_misses(tenant: str, chunks: list[RunbookChunk], titles: dict[str, str]) -> None:
    cache = RecommendationCache(10)
    cache.put("t", CHUNKS, TITLES, unit(1, 0), rec("a"))
    assert cache.get(tenant, chunks, titles, unit(1, 0)) is None


def test_without_chunks_nothing_is_kept_or_found() -> None:
    cache = RecommendationCache(10)
    cache.put("t", [], {}, unit(1, 0), rec("a"))
    assert len(cache) == 0 and cache.get("t", [], {}, unit(1, 0)) is None


def test_copies_in_and_out() -> None:
    cache = RecommendationCache(10)
    original = rec("a")
    cache.put("t", CHUNKS, TITLES, unit(1, 0), original)
    original.steps.append("changed by the caller")
    first = cache.get("t", CHUNKS, TITLES, unit(1, 0))
    assert first is not None and first.steps == ["Restart [runbook: db]"]
    first.steps.clear()
    again = cache.get("t", CHUNKS, TITLES, unit(1, 0))
    assert again is not None and again.steps == ["Restart [runbook: db]"]


def test_contexts_evicted_least_recently_used_and_incidents_oldest_first() -> None:
    cache = RecommendationCache(2, per_context=2, similarity=0.99)
    contexts = [[c.model_copy(update={"chunk_no": n})] for n, c in enumerate([CHUNKS[0]] * 3)]
    cache.put("t", contexts[0], TITLES, unit(1, 0), rec("c0"))
    cache.put("t", contexts[1], TITLES, unit(1, 0), rec("c1"))
    assert cache.get("t", contexts[0], TITLES, unit(1, 0)) is not None  # c0 is now the most recent
    cache.put("t", contexts[2], TITLES, unit(1, 0), rec("c2"))  # evicts c1
    assert len(cache) == 2
    assert cache.get("t", contexts[1], TITLES, unit(1, 0)) is None
    assert cache.get("t", contexts[0], TITLES, unit(1, 0)) is not None

    cache.put("t", contexts[0], TITLES, unit(0, 1), rec("c0-y"))
    cache.put("t", contexts[0], TITLES, unit(1, 1), rec("c0-xy"))  # the x-axis incident goes
    assert cache.get("t", contexts[0], TITLES, unit(1, 0)) is None
    found = cache.get("t", contexts[0], TITLES, unit(0, 1))
    assert found is not None and found.summary == "c0-y"


@pytest.mark.parametrize(
    "kwargs",
    [{"max_contexts": 0}, {"max_contexts": 1, "per_context": 0}, {"max_contexts": 1, "similarity": 0.0}],
)
def test_invalid_sizes_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RecommendationCache(**kwargs)  # type: ignore[arg-type]

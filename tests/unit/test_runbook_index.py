"""Hybrid runbook retrieval (RunbookIndex) over a small invented library, with a hashing embedder."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from incident_responder.models import Runbook, RunbookChunk
from incident_responder.pipeline.chunking import chunk_runbook, embedding_text, runbook_title
from incident_responder.pipeline.runbook_index import RunbookIndex

DIM = 64


class HashingEmbedder:
    """Deterministic bag-of-words embedder: each lowercase word hashed into one of 64 buckets."""

    dim = DIM

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z]+", text.lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % DIM] += 1.0
            norm = np.linalg.norm(out[row])
            if norm:
                out[row] /= norm
        return out


RUNBOOKS = {
    "PaymentGatewayTimeouts": """---
title: Payment Gateway Timeouts
---
# PaymentGatewayTimeouts

## Meaning

Calls from the checkout service to the external card processor exceed their deadline.

## Mitigation

Fail over to the secondary processor region and raise the client deadline temporarily.
""",
    "ocp-cache-operator-CacheEvictionStorm": """# CacheEvictionStorm

## Meaning

The in-memory cache evicts keys faster than it fills them because its memory limit is too small.

## Mitigation

Raise the maxmemory setting or add shards.
""",
    "QueueConsumerLagging": """# QueueConsumerLagging

## Meaning

Consumers of a message queue fall behind producers and the backlog keeps growing.

## Diagnosis

Compare publish and acknowledge rates per consumer group.

## Mitigation

Scale out the consumer deployment; roll back the last consumer release if throughput dropped.
""",
    "CertificateRenewalFailed": """# CertificateRenewalFailed

## Meaning

The ACME client could not rotate the TLS material of an ingress before its expiry.

## Mitigation

Inspect the issuer challenge and re-run the order.
""",
    "DatabaseReplicaDown": """# DatabaseReplicaDown

## Meaning

A read replica of the primary database is unreachable and replication has stopped.

## Diagnosis

Check the replica pod status and the replication slot on the primary.
""",
    "LoginErrorBudgetBurn": """# LoginErrorBudgetBurn

## Meaning

The login service returns too many HTTP 5xx responses and burns its monthly error budget.

## Mitigation

Roll back the most recent login deployment.
""",
}


def _put(library: RunbookIndex, embedder: HashingEmbedder, rid: str, content: str) -> list[RunbookChunk]:
    runbook = Runbook(id=rid, title=runbook_title(content, rid), content=content)
    chunks = chunk_runbook(runbook)
    vectors = embedder.embed([embedding_text(c, runbook.title) for c in chunks])
    library.put(runbook, chunks, vectors)
    return chunks


@pytest.fixture
def fake_embedder() -> HashingEmbedder:
    return HashingEmbedder()


@pytest.fixture
def library(fake_embedder: HashingEmbedder) -> RunbookIndex:
    lib = RunbookIndex()
    for rid, content in RUNBOOKS.items():
        _put(lib, fake_embedder, rid, content)
    return lib


def _search(lib: RunbookIndex, emb: HashingEmbedder, log: str, top_k: int = 5) -> list[str]:
    return [hit.id for hit, _ in lib.search(log, emb.embed([lib.query_text(log)])[0], top_k=top_k)]


def test_exact_alert_name_wins_even_against_better_text(
    library: RunbookIndex, fake_embedder: HashingEmbedder
) -> None:
    # The annotation text talks about database replicas, but the alert is named.
    log = (
        "2024-05-01T10:00:00Z alertmanager status=firing alertname=QueueConsumerLagging "
        'summary="read replica of the primary database is unreachable, replication stopped"'
    )
    results = library.search(log, fake_embedder.embed([library.query_text(log)])[0])
    assert results[0][0].id == "QueueConsumerLagging"
    assert results[0][0].score >= library.exact_match_floor
    assert all(hit.score < library.exact_match_floor for hit, _ in results[1:])


def test_exact_match_on_id_suffix_and_is_case_and_separator_insensitive(
    library: RunbookIndex, fake_embedder: HashingEmbedder
) -> None:
    assert _search(library, fake_embedder, "alertname=cache_eviction_storm")[0] == (
        "ocp-cache-operator-CacheEvictionStorm"
    )
    # An identifier in the notification title counts when it is an exact alert name.
    title_only = "[FIRING:1] LoginErrorBudgetBurn (prod critical)\nLabels:\n - severity = critical\n"
    assert _search(library, fake_embedder, title_only)[0] == "LoginErrorBudgetBurn"


def test_camel_case_title_matches_plain_words(library: RunbookIndex, fake_embedder: HashingEmbedder) -> None:
    # "certificate", "renewal" and "failed" only occur in the CamelCase id/title of that runbook.
    log = 'status=firing summary="Certificate renewal failed for the shop ingress"'
    assert _search(library, fake_embedder, log)[0] == "CertificateRenewalFailed"


def test_symptom_text_without_alert_name_finds_the_runbook(
    library: RunbookIndex, fake_embedder: HashingEmbedder
) -> None:
    log = (
        "[FIRING:1] payments (prod-eu-1 warning)\nLabels:\n - cluster = prod-eu-1\n - severity = warning\n"
        "Annotations:\n - description = The message backlog of consumer group invoices keeps growing; "
        "consumers fall behind producers.\n - summary = Consumers are behind.\n"
        "StartsAt: 2024-02-03 04:05:06.789 +0000 UTC"
    )
    assert _search(library, fake_embedder, log)[0] == "QueueConsumerLagging"
    log2 = 'summary="Calls to the card processor exceed their deadline at checkout"'
    assert _search(library, fake_embedder, log2)[0] == "PaymentGatewayTimeouts"


def test_hits_carry_their_best_matching_chunks(library: RunbookIndex, fake_embedder: HashingEmbedder) -> None:
    log = 'alertname=QueueConsumerLagging summary="compare publish and acknowledge rates per consumer group"'
    hit, chunks = library.search(log, fake_embedder.embed([library.query_text(log)])[0])[0]
    assert hit.id == "QueueConsumerLagging" and hit.title == "QueueConsumerLagging"
    assert 1 <= len(chunks) <= library.chunks_per_hit
    assert all(c.runbook_id == hit.id for c in chunks)
    assert any(c.heading.endswith("Diagnosis") for c in chunks)
    assert [c.chunk_no for c in chunks] == sorted(c.chunk_no for c in chunks)


def test_scores_are_in_unit_interval_sorted_and_respect_top_k_and_min_score(
    fake_embedder: HashingEmbedder,
) -> None:
    lib = RunbookIndex(min_score=0.0)
    for rid, content in RUNBOOKS.items():
        _put(lib, fake_embedder, rid, content)
    log = 'summary="roll back the deployment, errors and consumer throughput dropped"'
    results = lib.search(log, fake_embedder.embed([lib.query_text(log)])[0], top_k=4)
    scores = [hit.score for hit, _ in results]
    assert len(results) == 4
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores == sorted(scores, reverse=True)
    lib.min_score = scores[1]
    assert [h.id for h, _ in lib.search(log, fake_embedder.embed([lib.query_text(log)])[0])] == [
        h.id for h, _ in results if h.score >= scores[1]
    ]


def test_irrelevant_log_returns_nothing_with_default_min_score(
    library: RunbookIndex, fake_embedder: HashingEmbedder
) -> None:
    assert _search(library, fake_embedder, "zebra giraffe pelican migration observed at dawn") == []


def test_rrf_fusion_also_ranks_and_stays_in_unit_interval(fake_embedder: HashingEmbedder) -> None:
    lib = RunbookIndex(fusion="rrf", min_score=0.0)
    for rid, content in RUNBOOKS.items():
        _put(lib, fake_embedder, rid, content)
    log = 'summary="A read replica of the database is unreachable"'
    results = lib.search(log, fake_embedder.embed([lib.query_text(log)])[0])
    assert results[0][0].id == "DatabaseReplicaDown"
    assert all(0.0 <= hit.score <= 1.0 for hit, _ in results)


def test_empty_library(fake_embedder: HashingEmbedder) -> None:
    lib = RunbookIndex()
    assert len(lib) == 0
    assert lib.search("alertname=Anything", fake_embedder.embed(["anything"])[0]) == []
    assert lib.get("x") is None and lib.chunks("x") == [] and lib.remove("x") is False


def test_runbook_without_chunks_is_found_by_title(fake_embedder: HashingEmbedder) -> None:
    lib = RunbookIndex()
    _put(lib, fake_embedder, "QueueConsumerLagging", RUNBOOKS["QueueConsumerLagging"])
    empty = Runbook(id="orphan-alert", title="OrphanedVolumeDetected", content="")
    lib.put(empty, [], np.zeros((0, DIM), dtype=np.float32))
    assert lib.chunks("orphan-alert") == []
    assert _search(lib, fake_embedder, "alertname=OrphanedVolumeDetected")[0] == "orphan-alert"
    hits = lib.search(
        'summary="orphaned volume detected"', fake_embedder.embed(["orphaned volume detected"])[0]
    )
    assert hits[0][0].id == "orphan-alert" and hits[0][1] == []


def test_put_replaces_and_remove_forgets(library: RunbookIndex, fake_embedder: HashingEmbedder) -> None:
    assert len(library) == len(RUNBOOKS)
    log = 'summary="the feature flag service serves stale toggles"'
    assert "LoginErrorBudgetBurn" not in _search(library, fake_embedder, log)
    new_content = "# LoginErrorBudgetBurn\n\n## Meaning\n\nThe feature flag service serves stale toggles.\n"
    chunks = _put(library, fake_embedder, "LoginErrorBudgetBurn", new_content)
    assert len(library) == len(RUNBOOKS)
    assert library.chunks("LoginErrorBudgetBurn") == chunks
    runbook = library.get("LoginErrorBudgetBurn")
    assert runbook is not None and runbook.content == new_content
    assert _search(library, fake_embedder, log)[0] == "LoginErrorBudgetBurn"
    assert library.remove("LoginErrorBudgetBurn") is True
    assert library.remove("LoginErrorBudgetBurn") is False
    assert len(library) == len(RUNBOOKS) - 1
    assert "LoginErrorBudgetBurn" not in _search(library, fake_embedder, "alertname=LoginErrorBudgetBurn")


def test_put_validates_vectors(library: RunbookIndex, fake_embedder: HashingEmbedder) -> None:
    runbook = Runbook(id="x", title="X", content="# X\n\nbody\n")
    chunks = chunk_runbook(runbook)
    with pytest.raises(ValueError):
        library.put(runbook, chunks, np.zeros((2, DIM), dtype=np.float32))  # wrong count
    with pytest.raises(ValueError):
        library.put(runbook, chunks, np.zeros((1, DIM + 1), dtype=np.float32))  # wrong dim
    with pytest.raises(ValueError):
        library.put(Runbook(id="y", title="Y", content=""), chunks, np.zeros((1, DIM), dtype=np.float32))
    with pytest.raises(ValueError):
        library.search("alertname=X", np.zeros(DIM + 3, dtype=np.float32))
    assert library.get("x") is None


def test_concurrent_search_put_remove(fake_embedder: HashingEmbedder) -> None:
    lib = RunbookIndex(min_score=0.0)
    for rid, content in RUNBOOKS.items():
        _put(lib, fake_embedder, rid, content)
    log = 'alertname=QueueConsumerLagging summary="backlog grows"'
    qvec = fake_embedder.embed([lib.query_text(log)])[0]
    errors: list[BaseException] = []

    def searcher() -> None:
        try:
            for _ in range(40):
                hits = lib.search(log, qvec)
                assert hits and hits[0][0].id == "QueueConsumerLagging"
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    def writer(n: int) -> None:
        try:
            for i in range(20):
                rid = f"Extra{n}Runbook{i}"
                _put(lib, fake_embedder, rid, f"# {rid}\n\nSome unrelated text {i}.\n")
                if i % 2:
                    lib.remove(rid)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    threads += [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(lib) == len(RUNBOOKS) + 2 * 10

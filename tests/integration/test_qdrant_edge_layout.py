"""The embedded index's storage layout: float16 vectors, the ``_scope`` compound keyword
(and its backfill for shards written before it existed), and the periodic flush that
keeps the write-ahead log short."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe

from incident_responder.backends.vector.qdrant_edge import LEGACY_FIELDS, SCOPE, QdrantEdgeIndex, scope_of
from incident_responder.ports import VectorFilter, VectorPoint

DIM = 16


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _payload(tenant: str, service: str, n: int) -> dict[str, object]:
    return {
        "tenant": tenant,
        "kind": "incident",
        "service": service,
        "ticket_id": f"T{n}",
        "fingerprint": f"f{n}",
    }


def _points(rng: np.random.Generator, n: int) -> list[VectorPoint]:
    vectors = _unit(rng, n)
    return [
        VectorPoint(str(uuid.UUID(int=i + 1)), vectors[i], _payload(f"t{i % 2}", f"s{i % 3}", i))
        for i in range(n)
    ]


def _scoped(tenant: str, service: str) -> VectorFilter:
    return VectorFilter({"tenant": tenant, "kind": "incident", "service": service})


def _wal_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in (path / "wal").rglob("*") if f.is_file())


def test_scoped_search_matches_a_brute_force_scan_and_hides_the_scope_field(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    points = _points(rng, 300)
    idx = QdrantEdgeIndex(tmp_path / "i", DIM, flush_seconds=0)
    try:
        idx.upsert(points)
        query = _unit(rng, 1)[0]
        hits = idx.search(query, _scoped("t1", "s2"), limit=5)
        members = [p for p in points if p.payload["tenant"] == "t1" and p.payload["service"] == "s2"]
        expected = sorted(members, key=lambda p: -float(np.dot(p.vector, query)))[:5]
        assert [h.id for h in hits] == [p.id for p in expected]
        for hit, point in zip(hits, expected, strict=True):
            # float16 storage: scores within 2e-3 of the exact cosine, payloads as written
            assert hit.score == pytest.approx(float(np.dot(point.vector, query)), abs=2e-3)
            assert hit.payload == point.payload
        # a scoped filter plus another field, and a filter on part of the scope
        fp = idx.find(VectorFilter({**_scoped("t1", "s2").equals, "fingerprint": "f5"}), limit=3)
        assert [h.id for h in fp] == [points[5].id] and SCOPE not in fp[0].payload
        assert idx.count(VectorFilter({"tenant": "t0", "kind": "incident"})) == 150
        assert all(SCOPE not in p.payload for p in idx.vectors(_scoped("t0", "s0")))
    finally:
        idx.close()


def test_set_payload_refuses_to_move_a_point_out_of_its_scope(tmp_path: Path) -> None:
    idx = QdrantEdgeIndex(tmp_path / "i", DIM, flush_seconds=0)
    try:
        idx.upsert(_points(np.random.default_rng(2), 3))
        with pytest.raises(ValueError, match="cannot change"):
            idx.set_payload(VectorFilter({"ticket_id": "T1"}), {"service": "elsewhere"})
        idx.set_payload(VectorFilter({"ticket_id": "T1"}), {"status": "resolved"})
        (hit,) = idx.find(VectorFilter({"ticket_id": "T1"}), limit=2)
        assert hit.payload["status"] == "resolved"
        assert idx.count(_scoped("t1", "s1")) == 1  # still found by its scope
    finally:
        idx.close()


def test_a_shard_written_before_the_scope_field_is_backfilled_once(tmp_path: Path) -> None:
    path = tmp_path / "old"
    path.mkdir()
    shard = qe.EdgeShard.create(
        str(path), qe.EdgeConfig(vectors={"v": qe.EdgeVectorParams(size=DIM, distance=qe.Distance.Cosine)})
    )
    for name in LEGACY_FIELDS:
        shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Keyword))
    points = _points(np.random.default_rng(3), 60)
    shard.update(
        qe.UpdateOperation.upsert_points(
            [qe.Point(id=p.id, vector={"v": p.vector.tolist()}, payload=dict(p.payload)) for p in points]
        )
    )
    shard.flush()
    shard.close()

    idx = QdrantEdgeIndex(path, DIM, flush_seconds=0)
    try:
        assert idx.count(_scoped("t0", "s1")) == 10
        hits = idx.search(points[7].vector, _scoped("t1", "s1"), limit=1)
        assert hits[0].id == points[7].id and hits[0].score == pytest.approx(1.0, abs=1e-5)  # float32 kept
    finally:
        idx.close()
    reopened = qe.EdgeShard.load(str(path))
    try:
        assert SCOPE in reopened.info().payload_schema
        scoped = qe.Filter(
            must=[
                qe.FieldCondition(
                    key=SCOPE,
                    match=qe.MatchValue(scope_of({"tenant": "t0", "kind": "incident", "service": "s1"})),
                )
            ]
        )
        assert reopened.count(qe.CountRequest(filter=scoped, exact=True)) == 10
    finally:
        reopened.close()


def _fill(path: Path, flush_seconds: float) -> int:
    """Write ~100 MiB through the WAL; return the WAL's size a moment after the last write."""
    rng = np.random.default_rng(4)
    idx = QdrantEdgeIndex(path, DIM, flush_seconds=flush_seconds)
    try:
        for round_ in range(25):
            points = _points(rng, 1_000)
            idx.upsert(
                [VectorPoint(p.id, p.vector, {**p.payload, "log": f"{round_}" * 4_000}) for p in points]
            )
        time.sleep(4 * flush_seconds)
        return _wal_bytes(path)
    finally:
        idx.close()


def test_the_background_flush_truncates_the_write_ahead_log(tmp_path: Path) -> None:
    unflushed = _fill(tmp_path / "unflushed", 0)
    flushed = _fill(tmp_path / "flushed", 0.25)
    assert flushed < unflushed / 2, (flushed, unflushed)
    again = QdrantEdgeIndex(tmp_path / "flushed", DIM, flush_seconds=0)
    try:  # every write survived the truncation (ids repeat per round: upserts)
        assert again.count(VectorFilter({"kind": "incident"})) == 1_000
        (hit,) = again.find(VectorFilter({"ticket_id": "T7"}), limit=2)
        assert hit.payload["log"] == "24" * 4_000
    finally:
        again.close()


def test_float32_storage_can_still_be_chosen(tmp_path: Path) -> None:
    vector = _unit(np.random.default_rng(5), 1)[0]
    idx = QdrantEdgeIndex(tmp_path / "i", DIM, float16=False, flush_seconds=0)
    try:
        idx.upsert([VectorPoint(str(uuid.uuid4()), vector, {"tenant": "t"})])
        (stored,) = idx.vectors(VectorFilter({"tenant": "t"}))
        assert np.allclose(stored.vector, vector, atol=1e-6)
    finally:
        idx.close()


def test_a_new_shard_indexes_only_the_fields_that_narrow_a_filter(tmp_path: Path) -> None:
    from incident_responder.backends.vector.qdrant_edge import INDEXED_FIELDS

    points = _points(np.random.default_rng(6), 30)
    idx = QdrantEdgeIndex(tmp_path / "i", DIM, flush_seconds=0)
    try:
        idx.upsert(points)
        # filters on unindexed fields (tenant, service) still answer exactly
        assert idx.count(VectorFilter({"tenant": "t1"})) == 15
        assert {h.id for h in idx.find(VectorFilter({"tenant": "t0", "service": "s2"}), limit=50)} == {
            p.id for p in points if p.payload["tenant"] == "t0" and p.payload["service"] == "s2"
        }
    finally:
        idx.close()
    shard = qe.EdgeShard.load(str(tmp_path / "i"))
    try:
        assert set(shard.info().payload_schema) == set(INDEXED_FIELDS)
    finally:
        shard.close()


_FLUSH_FAILS_THEN_RECOVERS = """
import resource, signal, sys, time, uuid
from pathlib import Path
import numpy as np
from incident_responder.backends.vector.qdrant_edge import QdrantEdgeIndex
from incident_responder.logs import configure_logging
from incident_responder.ports import VectorFilter, VectorPoint

configure_logging("info", "json")
path, dim = Path(sys.argv[1]), 16
rng = np.random.default_rng(3)
def points(start, n):
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return [VectorPoint(str(uuid.UUID(int=i + 1)), v[i - start] / np.linalg.norm(v[i - start]),
                        {"tenant": "t", "kind": "incident", "service": "s", "ticket_id": f"T{i}"})
            for i in range(start, start + n)]
index = QdrantEdgeIndex(path, dim, flush_seconds=0.2)
index.upsert(points(0, 50))
time.sleep(0.6)  # flushed once
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # no file may grow past 4 KiB: flushes fail
index.upsert(points(50, 500))
time.sleep(0.8)  # several failed rounds
print("COUNT_WHILE_FAILING", index.count(VectorFilter({"kind": "incident"})), flush=True)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
print("LIMIT_LIFTED", flush=True)
time.sleep(0.8)  # the next round flushes, and later rounds have nothing to do
print("CLOSING", flush=True)
index.close()
again = QdrantEdgeIndex(path, dim, flush_seconds=0)
print("COUNT_REOPENED", again.count(VectorFilter({"kind": "incident"})), flush=True)
again.close()
"""


def test_a_failed_background_flush_is_logged_retried_and_loses_nothing(tmp_path: Path) -> None:
    """A real shard's flush fails (a file-size limit makes its segment writes fail with EFBIG):
    the flush thread logs it and keeps going, searches still see every point, and once
    writes succeed again the next round flushes and a reopened index has everything."""
    import subprocess
    import sys

    # Its own process: the file-size limit would hit every other thread of pytest too.
    done = subprocess.run(
        [sys.executable, "-c", _FLUSH_FAILS_THEN_RECOVERS, str(tmp_path / "idx")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream, in order
        text=True,
        timeout=120,
    )
    out = done.stdout
    assert done.returncode == 0, out[-3000:]
    failing, _, lifted = out.partition("LIMIT_LIFTED")
    assert "COUNT_WHILE_FAILING 550" in failing
    assert failing.count("vector_index.flush_failed") >= 2, failing[-3000:]
    # After the limit is lifted at most the round already under way fails; then it flushes.
    before_close = lifted.partition("CLOSING")[0]
    assert before_close.count("vector_index.flush_failed") <= 1, out[-3000:]
    assert "COUNT_REOPENED 550" in lifted

"""One contract for every VectorIndex backend: Qdrant Edge, Qdrant (local mode), pgvector, Pinecone."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path

import numpy as np
import pytest

from incident_responder.backends.vector.qdrant_edge import QdrantEdgeIndex
from incident_responder.ports import VectorFilter, VectorIndex, VectorPoint

DIM = 8


def _vec(*xs: float) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[: len(xs)] = xs
    return v / np.linalg.norm(v)


def _pid() -> str:
    return str(uuid.uuid4())


@pytest.fixture(params=["qdrant-edge", "qdrant-local", "pgvector", "pinecone-fake"])
def index(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    open_vector_index: Callable[..., ContextManager[VectorIndex]],
) -> Iterator[VectorIndex]:
    if request.param == "qdrant-edge":
        idx = QdrantEdgeIndex(tmp_path / "index", DIM)
        yield idx
        idx.close()
    else:
        with open_vector_index(request.param, DIM) as server_idx:
            yield server_idx


def test_search_is_filtered_and_ranked(index: VectorIndex) -> None:
    a, b, c = _pid(), _pid(), _pid()
    index.upsert(
        [
            VectorPoint(a, _vec(1, 0), {"tenant": "t1", "service": "s", "ticket_id": "A"}),
            VectorPoint(b, _vec(1, 0.2), {"tenant": "t1", "service": "s", "ticket_id": "B"}),
            VectorPoint(c, _vec(1, 0), {"tenant": "t2", "service": "s", "ticket_id": "C"}),
        ]
    )
    hits = index.search(_vec(1, 0), VectorFilter({"tenant": "t1", "service": "s"}), limit=5)
    assert [h.id for h in hits] == [a, b]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5) and hits[0].score > hits[1].score
    assert hits[0].payload["ticket_id"] == "A"
    assert index.search(_vec(1, 0), VectorFilter({"tenant": "t3"}), limit=5) == []


def test_find_set_payload_delete_exists(index: VectorIndex) -> None:
    ids = [_pid() for _ in range(3)]
    index.upsert(
        [VectorPoint(i, _vec(1, n), {"tenant": "t", "ticket_id": f"T{n % 2}"}) for n, i in enumerate(ids)]
    )
    assert {h.id for h in index.find(VectorFilter({"ticket_id": "T0"}), limit=10)} == {ids[0], ids[2]}
    index.set_payload(VectorFilter({"ticket_id": "T0"}), {"status": "resolved"})
    assert all(
        h.payload["status"] == "resolved" for h in index.find(VectorFilter({"ticket_id": "T0"}), limit=10)
    )
    index.delete(VectorFilter({"ticket_id": "T0"}))
    assert not index.exists(ids[0]) and index.exists(ids[1])
    stored = index.vectors(VectorFilter({"tenant": "t"}))
    assert [p.id for p in stored] == [ids[1]]
    assert np.allclose(stored[0].vector, _vec(1, 1), atol=1e-3)  # the embedded index keeps float16


def test_any_of_matches_points_with_one_of_the_values(index: VectorIndex) -> None:
    ids = [_pid() for _ in range(4)]
    index.upsert(
        [
            VectorPoint(
                ids[0], _vec(1, 0), {"tenant": "t", "service": "s", "fingerprint": "f1", "ticket_id": "A"}
            ),
            VectorPoint(
                ids[1], _vec(0, 1), {"tenant": "t", "service": "s", "fingerprint": "f2", "ticket_id": "B"}
            ),
            VectorPoint(
                ids[2], _vec(1, 1), {"tenant": "t", "service": "s", "fingerprint": "f3", "ticket_id": "C"}
            ),
            VectorPoint(
                ids[3], _vec(1, 0), {"tenant": "t", "service": "x", "fingerprint": "f1", "ticket_id": "D"}
            ),
        ]
    )
    where = VectorFilter({"tenant": "t", "service": "s"}, any_of={"fingerprint": ["f1", "f3", "f9"]})
    assert {h.payload["ticket_id"] for h in index.find(where, limit=10)} == {"A", "C"}
    assert [h.payload["ticket_id"] for h in index.search(_vec(1, 0), where, limit=10)] == ["A", "C"]
    assert {p.id for p in index.vectors(where)} == {ids[0], ids[2]}
    two_fields = VectorFilter({"tenant": "t"}, any_of={"fingerprint": ["f1"], "service": ["x", "y"]})
    assert [h.payload["ticket_id"] for h in index.find(two_fields, limit=10)] == ["D"]
    index.set_payload(where, {"status": "resolved"})
    assert {
        h.payload["ticket_id"]
        for h in index.find(VectorFilter({"status": "resolved"} | {"tenant": "t"}), limit=10)
    } == {"A", "C"}
    index.delete(where)
    assert [index.exists(i) for i in ids] == [False, True, False, True]


def test_any_of_needs_values() -> None:
    for bad in ([], "f1"):
        with pytest.raises(ValueError, match="non-empty list"):
            VectorFilter({"tenant": "t"}, any_of={"fingerprint": bad})  # type: ignore[dict-item]
    assert VectorFilter().empty and not VectorFilter(any_of={"a": ["b"]}).empty


def test_upsert_replaces(index: VectorIndex) -> None:
    pid = _pid()
    index.upsert([VectorPoint(pid, _vec(1, 0), {"tenant": "t", "v": "1"})])
    index.upsert([VectorPoint(pid, _vec(0, 1), {"tenant": "t", "v": "2"})])
    hits = index.search(_vec(0, 1), VectorFilter({"tenant": "t"}), limit=5)
    assert len(hits) == 1 and hits[0].payload["v"] == "2"


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    idx = QdrantEdgeIndex(tmp_path / "i", DIM)
    pid = _pid()
    idx.upsert([VectorPoint(pid, _vec(1, 0), {"tenant": "t"})])
    idx.close()
    again = QdrantEdgeIndex(tmp_path / "i", DIM)
    assert again.exists(pid)
    again.close()


_WRITER = textwrap.dedent(
    """
    import sys, uuid, numpy as np
    from pathlib import Path
    from incident_responder.backends.vector.qdrant_edge import QdrantEdgeIndex
    from incident_responder.ports import VectorPoint
    idx = QdrantEdgeIndex(Path(sys.argv[1]), 8)
    n = 0
    while True:
        v = np.random.rand(8).astype(np.float32)
        idx.upsert([VectorPoint(str(uuid.UUID(int=n + 1)), v / np.linalg.norm(v), {"tenant": "t", "n": n})])
        print(n, flush=True)
        n += 1
    """
)


@pytest.mark.parametrize("after", [5, 200, 2000])
def test_kill_9_during_writes_keeps_every_acknowledged_point(tmp_path: Path, after: int) -> None:
    path = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    acked = -1
    for line in proc.stdout:
        acked = int(line)
        if acked >= after:
            break
    proc.kill()
    proc.wait()
    proc.stdout.close()
    idx = QdrantEdgeIndex(path, DIM)
    try:
        assert all(idx.exists(str(uuid.UUID(int=n + 1))) for n in range(acked + 1))
        assert len(idx.search(_vec(1), VectorFilter({"tenant": "t"}), limit=3)) == 3
    finally:
        idx.close()

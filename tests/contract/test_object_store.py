"""One contract for every ObjectStore backend: local files, S3 (moto server and SeaweedFS)."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from incident_responder.backends.objects.local import LocalObjectStore
from incident_responder.errors import InvalidInput, VersionConflict
from incident_responder.ports import ObjectStore

if TYPE_CHECKING:
    from tests.s3_servers import S3Server


@pytest.fixture(params=["local", "s3-moto", "s3-seaweedfs"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "local":
        yield LocalObjectStore(tmp_path / "objects")
        return
    # Session-scoped real servers (tests/s3_servers.py), started only when an S3 case runs;
    # each test gets a fresh key prefix in the shared bucket.
    server: S3Server = request.getfixturevalue(
        {"s3-moto": "moto_s3", "s3-seaweedfs": "seaweedfs_s3"}[request.param]
    )
    with server.store() as s3_store:
        yield s3_store


def test_put_get_delete(store: ObjectStore) -> None:
    assert store.get("t/tickets/a.json") is None
    v1 = store.put("t/tickets/a.json", b"one")
    got = store.get("t/tickets/a.json")
    assert got is not None and got.data == b"one" and got.version == v1
    store.delete("t/tickets/a.json")
    store.delete("t/tickets/a.json")  # absent: no error
    assert store.get("t/tickets/a.json") is None


def test_compare_and_swap(store: ObjectStore) -> None:
    v1 = store.put("k/x.json", b"1", if_absent=True)
    with pytest.raises(VersionConflict):
        store.put("k/x.json", b"2", if_absent=True)
    v2 = store.put("k/x.json", b"2", if_version=v1)
    with pytest.raises(VersionConflict):
        store.put("k/x.json", b"3", if_version=v1)  # stale
    with pytest.raises(VersionConflict):
        store.put("k/missing.json", b"3", if_version=v2)
    got = store.get("k/x.json")
    assert got is not None and got.data == b"2"


def test_list_prefix_order_and_paging(store: ObjectStore) -> None:
    for name in ("c", "a", "b", "d"):
        store.put(f"t/tickets/{name}.json", b"{}")
    store.put("t/runbooks/z.json", b"{}")
    store.put("u/tickets/a.json", b"{}")
    assert store.list_keys("t/tickets/") == [f"t/tickets/{n}.json" for n in "abcd"]
    assert store.list_keys("t/tickets/", start_after="t/tickets/b.json", limit=1) == ["t/tickets/c.json"]
    assert store.list_keys("nobody/tickets/") == []
    assert store.list_prefixes("") == ["t", "u"]


@pytest.mark.parametrize("key", ["", "../x", "a/../../b", "a//b", "/abs", "a/.hidden"])
def test_unsafe_keys_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidInput):
        store.put(key, b"x")


def test_racing_writers_exactly_one_wins(store: ObjectStore) -> None:
    base = store.put("race/x.json", b"0")
    wins: list[int] = []
    barrier = threading.Barrier(8)

    def writer(i: int) -> None:
        barrier.wait()
        try:
            # Versions are content hashes (as S3 ETags are), so each writer writes distinct bytes.
            store.put("race/x.json", f"w{i}".encode(), if_version=base)
            wins.append(i)
        except VersionConflict:
            pass

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    got = store.get("race/x.json")
    assert got is not None and got.data == f"w{wins[0]}".encode()


def _increment(root: str, n: int) -> None:
    store = LocalObjectStore(Path(root))
    for _ in range(n):
        while True:
            cur = store.get("c/n.json")
            assert cur is not None
            try:
                store.put("c/n.json", str(int(cur.data) + 1).encode(), if_version=cur.version)
                break
            except VersionConflict:
                continue


def test_local_cas_holds_across_processes(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    LocalObjectStore(root).put("c/n.json", b"0")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_increment, args=(str(root), 25)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    got = LocalObjectStore(root).get("c/n.json")
    assert got is not None and got.data == b"100"


def test_no_temp_files_left_behind(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "o")
    for i in range(20):
        store.put("t/tickets/x.json", str(i).encode())
    leftovers = [p.name for p in (tmp_path / "o" / "t" / "tickets").iterdir() if ".tmp-" in p.name]
    assert leftovers == []

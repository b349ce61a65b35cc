"""One contract for every ObjectStore backend: local files, S3 (moto server and SeaweedFS)."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from incident_responder.backends.objects.local import LocalObjectStore
from incident_responder.errors import BackendUnavailable, InvalidInput, VersionConflict
from incident_responder.ports import ObjectStore, ObjectWrite

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


def test_put_many_applies_each_condition_on_its_own(store: ObjectStore) -> None:
    v_a = store.put("g/a.json", b"a1")
    store.put("g/b.json", b"b1")
    results = store.put_many(
        [
            ObjectWrite("g/a.json", b"a2", if_version=v_a),  # current: lands
            ObjectWrite("g/b.json", b"b2", if_version=v_a),  # stale: refused
            ObjectWrite("g/c.json", b"c1", if_absent=True),  # absent: lands
            ObjectWrite("g/a2.json", b"x"),  # unconditional
            ObjectWrite("g/b.json-missing", b"y", if_version="nope"),  # missing: refused
        ]
    )
    assert isinstance(results[1], VersionConflict) and isinstance(results[4], VersionConflict)
    assert [store.get(k).data for k in ("g/a.json", "g/b.json", "g/c.json", "g/a2.json")] == [  # type: ignore[union-attr]
        b"a2",
        b"b1",
        b"c1",
        b"x",
    ]
    got_a = store.get("g/a.json")
    assert got_a is not None and results[0] == got_a.version
    assert store.get("g/b.json-missing") is None
    assert store.put_many([]) == []


def test_put_many_writes_after_a_write_only_if_that_one_lands(store: ObjectStore) -> None:
    # A ticket's compare-and-swap and the incident records that may exist only with it.
    v_a = store.put("g/tickets/a.json", b"a1")
    store.put("g/tickets/b.json", b"b1")
    results = store.put_many(
        [
            ObjectWrite("g/tickets/a.json", b"a2", if_version=v_a),  # current: lands
            ObjectWrite("g/tickets/b.json", b"b2", if_version=v_a),  # stale: refused
            ObjectWrite("g/incidents/1.json", b"r1", after="g/tickets/a.json"),
            ObjectWrite("g/incidents/2.json", b"r2", after="g/tickets/b.json"),
            ObjectWrite("g/incidents/3.json", b"r3", after="g/incidents/2.json"),  # a chain
            ObjectWrite("g/incidents/4.json", b"r4"),
        ]
    )
    landed = [isinstance(r, str) for r in results]
    assert landed == [True, False, True, False, False, True]
    assert "g/tickets/b.json was refused" in str(results[3])
    assert {k: (got.data if (got := store.get(f"g/incidents/{k}.json")) else None) for k in "1234"} == {
        "1": b"r1",
        "2": None,
        "3": None,
        "4": b"r4",
    }


@pytest.mark.parametrize("after", ["g/later.json", "g/absent.json", "g/self.json"])
def test_put_many_rejects_an_after_that_names_no_earlier_write(store: ObjectStore, after: str) -> None:
    with pytest.raises(InvalidInput, match="not an earlier write"):
        store.put_many(
            [
                ObjectWrite("g/first.json", b"1"),
                ObjectWrite("g/self.json", b"2", after=after),
                ObjectWrite("g/later.json", b"3"),
            ]
        )
    assert [store.get(k) for k in ("g/first.json", "g/self.json", "g/later.json")] == [None, None, None]


def test_put_many_rejects_a_key_twice(store: ObjectStore) -> None:
    with pytest.raises(InvalidInput):
        store.put_many([ObjectWrite("g/a.json", b"1"), ObjectWrite("g/a.json", b"2")])
    assert store.get("g/a.json") is None


def test_put_many_concurrent_groups_never_lose_a_compare_and_swap(store: ObjectStore) -> None:
    """Eight threads each add their mark to the same three counters through put_many,
    retrying refused writes: no increment may be lost."""
    keys = ["cnt/a.json", "cnt/b.json", "cnt/c.json"]
    for key in keys:
        store.put(key, b"0")
    rounds = 5

    def worker() -> None:
        for _ in range(rounds):
            todo = list(keys)
            while todo:
                current = {k: store.get(k) for k in todo}
                writes = [
                    ObjectWrite(k, str(int(c.data) + 1).encode(), if_version=c.version)
                    for k, c in current.items()
                    if c is not None
                ]
                results = store.put_many(writes)
                todo = [w.key for w, r in zip(writes, results, strict=True) if isinstance(r, VersionConflict)]

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [int(store.get(k).data) for k in keys] == [8 * rounds] * 3  # type: ignore[union-attr]


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


def test_local_put_many_without_syncfs_fsyncs_each_file(tmp_path: Path) -> None:
    """The portable fallback (no syncfs: not Linux) writes the same results."""
    store = LocalObjectStore(tmp_path / "o", group_sync=False)
    v = store.put("g/a.json", b"1")
    results = store.put_many([ObjectWrite("g/a.json", b"2", if_version=v), ObjectWrite("g/b.json", b"3")])
    assert all(isinstance(r, str) for r in results)
    assert [store.get(k).data for k in ("g/a.json", "g/b.json")] == [b"2", b"3"]  # type: ignore[union-attr]
    assert not [p for p in (tmp_path / "o" / "g").iterdir() if ".tmp-" in p.name]


def test_local_put_many_failure_is_unavailable_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "o")
    store.put("g/a.json", b"1")
    (tmp_path / "o" / "g" / "b.json").mkdir()  # a directory where a file must go: rename fails
    with pytest.raises(BackendUnavailable):
        store.put_many([ObjectWrite("g/a.json", b"2"), ObjectWrite("g/b.json", b"3")])
    assert not [p for p in (tmp_path / "o" / "g").iterdir() if ".tmp-" in p.name]


def test_local_put_many_renames_in_order_so_a_failure_never_keeps_a_write_without_its_predecessor(
    tmp_path: Path,
) -> None:
    store = LocalObjectStore(tmp_path / "o")
    (tmp_path / "o" / "g").mkdir(parents=True)
    (tmp_path / "o" / "g" / "ticket.json").mkdir()  # a directory where the file must go: its rename fails
    with pytest.raises(BackendUnavailable):
        store.put_many(
            [ObjectWrite("g/ticket.json", b"t"), ObjectWrite("g/record.json", b"r", after="g/ticket.json")]
        )
    assert store.get("g/record.json") is None
    assert not [p for p in (tmp_path / "o" / "g").iterdir() if ".tmp-" in p.name]


def test_local_store_recreates_a_directory_removed_under_it(tmp_path: Path) -> None:
    # Directories are made once and remembered; one removed meanwhile (an operator's cleanup)
    # is made again rather than failing every later write to it.
    store = LocalObjectStore(tmp_path / "o")
    store.put("t/incidents/a.json", b"1")
    shutil.rmtree(tmp_path / "o" / "t")
    store.put("t/incidents/b.json", b"2")
    store.put_many([ObjectWrite("t/incidents/c.json", b"3")])
    assert [store.get(f"t/incidents/{k}.json").data for k in "bc"] == [b"2", b"3"]  # type: ignore[union-attr]


def test_local_store_reads_and_writes_objects_larger_than_one_read(tmp_path: Path) -> None:
    # Files are read in 64 KiB reads and written with os.write, which may write less than asked.
    store = LocalObjectStore(tmp_path / "o")
    big = os.urandom(300_000)
    store.put("t/big.json", big)
    store.put_many([ObjectWrite("t/empty.json", b""), ObjectWrite("t/big2.json", big[::-1])])
    assert store.get("t/big.json").data == big  # type: ignore[union-attr]
    assert store.get("t/big2.json").data == big[::-1]  # type: ignore[union-attr]
    assert store.get("t/empty.json").data == b""  # type: ignore[union-attr]


def test_local_store_finishes_short_writes_and_refuses_a_write_that_makes_no_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kernel may write less than asked (a signal, a nearly full disk): the rest follows.
    from incident_responder.backends.objects import local

    real_write = os.write
    monkeypatch.setattr(local.os, "write", lambda fd, data: real_write(fd, bytes(data[:1000])))
    store = LocalObjectStore(tmp_path / "o")
    data = os.urandom(10_500)
    store.put_many([ObjectWrite("t/a.json", data)])
    assert store.get("t/a.json").data == data  # type: ignore[union-attr]
    monkeypatch.setattr(local.os, "write", lambda fd, data: 0)
    with pytest.raises(BackendUnavailable, match="no progress"):
        store.put("t/b.json", b"never")
    assert store.get("t/b.json") is None
    assert not [p for p in (tmp_path / "o" / "t").iterdir() if ".tmp-" in p.name]


def test_local_store_writers_of_one_key_in_many_threads_leave_one_whole_object(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "o")
    payloads = [bytes([n]) * 5_000 for n in range(64)]
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda data: store.put_many([ObjectWrite("t/same.json", data)]), payloads))
    assert store.get("t/same.json").data in payloads  # type: ignore[union-attr]
    assert not [p for p in (tmp_path / "o" / "t").iterdir() if ".tmp-" in p.name]


def test_local_store_locks_on_shared_stripes_not_a_file_per_key(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "o")
    store.put_many([ObjectWrite(f"t/incidents/i{n}.json", b"{}") for n in range(300)])
    for n in range(50):
        store.put(f"t/tickets/k{n}.json", b"1")
    names = {p.name for p in (tmp_path / "o" / "t" / "incidents").iterdir()}
    assert names == {f"i{n}.json" for n in range(300)}  # nothing beside the objects themselves
    stripes = list((tmp_path / "o" / ".locks").iterdir())
    assert 0 < len(stripes) <= 1024
    assert store.list_prefixes("") == ["t"]  # the lock dir is no tenant

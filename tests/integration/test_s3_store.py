"""S3ObjectStore on real S3-compatible servers (moto server mode, SeaweedFS) and at its error boundary."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from botocore.response import StreamingBody  # type: ignore[import-untyped]
from botocore.stub import Stubber  # type: ignore[import-untyped]

from incident_responder.backends.objects.s3 import S3ObjectStore, make_s3_client
from incident_responder.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    InvalidInput,
    VersionConflict,
)

if TYPE_CHECKING:
    from tests.s3_servers import S3Server


@pytest.fixture(params=["moto_s3", "seaweedfs_s3"], ids=["moto", "seaweedfs"])
def server(request: pytest.FixtureRequest) -> S3Server:
    result: S3Server = request.getfixturevalue(request.param)
    return result


@pytest.fixture
def store(server: S3Server) -> Iterator[S3ObjectStore]:
    with server.store() as s3_store:
        yield s3_store


def _race(n: int, attempt: Callable[[int], object]) -> list[int]:
    """Run ``attempt(i)`` in n threads released together; the indexes that did not conflict."""
    wins: list[int] = []
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        try:
            attempt(i)
            wins.append(i)
        except VersionConflict:
            pass

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return wins


# --- conditional writes on real servers ---------------------------------------------------


def test_racing_if_version_writers_exactly_one_wins(store: S3ObjectStore) -> None:
    base = store.put("race/x.json", b"0")
    wins = _race(8, lambda i: store.put("race/x.json", f"w{i}".encode(), if_version=base))
    assert len(wins) == 1
    got = store.get("race/x.json")
    assert got is not None and got.data == f"w{wins[0]}".encode()


def test_racing_if_absent_creators_exactly_one_wins(store: S3ObjectStore) -> None:
    wins = _race(8, lambda i: store.put("race/new.json", f"c{i}".encode(), if_absent=True))
    assert len(wins) == 1
    got = store.get("race/new.json")
    assert got is not None and got.data == f"c{wins[0]}".encode()


def test_versions_are_etags_and_round_trip(store: S3ObjectStore, server: S3Server) -> None:
    v1 = store.put("t/tickets/a.json", b'{"n": 1}', if_absent=True)
    head = server.shared_client.head_object(Bucket=server.bucket, Key=f"{store.prefix}t/tickets/a.json")
    assert v1 == head["ETag"]
    got = store.get("t/tickets/a.json")
    assert got is not None and got.version == v1
    v2 = store.put("t/tickets/a.json", b'{"n": 2}', if_version=got.version)
    assert v2 != v1
    with pytest.raises(VersionConflict):
        store.put("t/tickets/a.json", b'{"n": 3}', if_version=v1)
    with pytest.raises(VersionConflict):  # 404 NoSuchKey on moto/AWS, 412 on SeaweedFS
        store.put("t/tickets/missing.json", b"{}", if_version=v2)
    with pytest.raises(VersionConflict):
        store.put("t/tickets/a.json", b"{}", if_version=v2, if_absent=True)


# --- layout, prefixes, listing ------------------------------------------------------------


def test_prefix_isolation(server: S3Server) -> None:
    with server.store() as base:
        root = base.prefix.rstrip("/")
    with server.store(f"{root}/alpha") as alpha, server.store(f"{root}/beta/") as beta:
        alpha.put("acme/tickets/a.json", b"alpha")
        beta.put("acme/tickets/a.json", b"beta")
        beta.put("globex/tickets/b.json", b"beta")

        got_a, got_b = alpha.get("acme/tickets/a.json"), beta.get("acme/tickets/a.json")
        assert got_a is not None and got_a.data == b"alpha"
        assert got_b is not None and got_b.data == b"beta"
        assert alpha.get("globex/tickets/b.json") is None
        assert alpha.list_prefixes("") == ["acme"]
        assert beta.list_prefixes("") == ["acme", "globex"]
        assert alpha.list_keys("acme/tickets/") == ["acme/tickets/a.json"]

        alpha.delete("acme/tickets/a.json")
        assert alpha.get("acme/tickets/a.json") is None
        assert beta.get("acme/tickets/a.json") is not None

        # The keys sit in the bucket under the prefix, unchanged otherwise.
        listed = server.shared_client.list_objects_v2(Bucket=server.bucket, Prefix=f"{root}/")
        assert sorted(o["Key"] for o in listed["Contents"]) == [
            f"{root}/beta/acme/tickets/a.json",
            f"{root}/beta/globex/tickets/b.json",
        ]
        with server.store(root) as parent:
            # SeaweedFS keeps emptied "folders" listed for a while (as the local store keeps
            # empty directories); AWS and moto drop alpha/ at once.
            assert parent.list_prefixes("") in (["beta"], ["alpha", "beta"])
            assert parent.list_keys("alpha/acme/tickets/") == []


def test_listing_pages_and_levels(server: S3Server) -> None:
    with server.store() as plain:
        store = S3ObjectStore(
            bucket=server.bucket, prefix=plain.prefix, client=server.shared_client, page_size=2
        )
    names = [f"{c}.json" for c in "edcba"]
    for name in names:
        store.put(f"t/tickets/{name}", b"{}")
    store.put("t/tickets/nested/deeper.json", b"{}")  # a level below: not listed, as locally
    for tenant in ("t", "u", "v", "w", "x"):
        store.put(f"{tenant}/runbooks/r.json", b"{}")

    expected = [f"t/tickets/{n}" for n in sorted(names)]
    assert store.list_keys("t/tickets/") == expected
    assert store.list_keys("t/tickets/", limit=3) == expected[:3]
    assert store.list_keys("t/tickets/", start_after="t/tickets/b.json", limit=2) == expected[2:4]
    assert store.list_keys("t/tickets/", start_after="t/tickets/e.json") == []
    assert store.list_keys("t/tickets/c") == ["t/tickets/c.json"]
    assert store.list_keys("t/tickets/", limit=0) == []
    assert store.list_prefixes("") == ["t", "u", "v", "w", "x"]
    assert store.list_prefixes("t") == store.list_prefixes("t/") == ["runbooks", "tickets"]
    with pytest.raises(InvalidInput):
        store.list_keys("../t/")
    with pytest.raises(InvalidInput):
        store.list_prefixes("a//b")


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        S3ObjectStore(bucket="b", prefix="a/../b", client=None)
    with pytest.raises(ConfigError):
        S3ObjectStore(bucket="", client=None)
    with pytest.raises(ConfigError):
        make_s3_client(
            endpoint_url="http://127.0.0.1:9",
            region="us-east-1",
            access_key_id="only-the-id",
            secret_access_key=None,
            connect_timeout=1,
            read_timeout=1,
            max_attempts=1,
        )


# --- failures -----------------------------------------------------------------------------


def test_missing_bucket_is_a_clear_backend_error(server: S3Server) -> None:
    with server.store(bucket="ir-no-such-bucket") as store:
        with pytest.raises(BackendError, match="does not exist") as info:
            store.ping()
        assert not isinstance(info.value, BackendUnavailable)
        # A missing bucket must never read as a missing key.
        with pytest.raises(BackendError, match="NoSuchBucket"):
            store.get("t/tickets/a.json")
        with pytest.raises(BackendError, match="NoSuchBucket"):
            store.put("t/tickets/a.json", b"{}")


def test_wrong_credentials_are_a_clear_backend_error(seaweedfs_s3: S3Server) -> None:
    # moto accepts any credentials; SeaweedFS runs with S3 auth on.
    with seaweedfs_s3.store(secret_access_key="not-the-secret") as store:
        with pytest.raises(BackendError, match="denied") as info:
            store.ping()
        assert not isinstance(info.value, BackendUnavailable)
        with pytest.raises(BackendError) as got:
            store.get("t/tickets/a.json")
        assert not isinstance(got.value, BackendUnavailable)
    with seaweedfs_s3.store(access_key_id="nobody") as store, pytest.raises(BackendError, match="denied"):
        store.ping()


def _fast_client(endpoint_url: str, max_attempts: int = 1) -> Any:
    return make_s3_client(
        endpoint_url=endpoint_url,
        region="us-east-1",
        access_key_id="k",
        secret_access_key="s",
        connect_timeout=0.3,
        read_timeout=0.3,
        max_attempts=max_attempts,
    )


def test_unreachable_endpoint_is_unavailable_quickly() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = _fast_client(f"http://127.0.0.1:{port}", max_attempts=2)
    try:
        store = S3ObjectStore(bucket="b", client=client)
        calls: list[Callable[[], object]] = [
            store.ping,
            lambda: store.get("t/x.json"),
            lambda: store.put("t/x.json", b"{}", if_absent=True),
            lambda: store.list_keys("t/"),
            lambda: store.delete("t/x.json"),
        ]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(BackendUnavailable):
                call()
            assert time.monotonic() - started < 3
    finally:
        client.close()


def test_silent_endpoint_times_out_as_unavailable() -> None:
    # Accepts TCP connections (kernel backlog) but never answers: the read timeout fires.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        client = _fast_client(f"http://127.0.0.1:{silent.getsockname()[1]}")
        try:
            store = S3ObjectStore(bucket="b", client=client)
            started = time.monotonic()
            with pytest.raises(BackendUnavailable, match=r"timeout|timed out"):
                store.get("t/x.json")
            assert time.monotonic() - started < 3
        finally:
            client.close()


# --- error translation without a server (botocore's Stubber) -------------------------------


@pytest.fixture(scope="module")
def stub_client() -> Iterator[Any]:
    client = _fast_client("http://127.0.0.1:9")  # never dialled: the Stubber answers every call
    yield client
    client.close()


@pytest.fixture
def stubbed(stub_client: Any) -> Iterator[tuple[S3ObjectStore, Stubber]]:
    with Stubber(stub_client) as stubber:
        yield S3ObjectStore(bucket="b", prefix="p", client=stub_client), stubber


def _body(data: bytes) -> StreamingBody:
    return StreamingBody(io.BytesIO(data), len(data))


def test_retried_write_that_landed_is_not_reported_as_lost(stubbed: tuple[S3ObjectStore, Stubber]) -> None:
    # botocore retried a timed-out PUT whose first attempt had landed: the retry meets our own write.
    store, stubber = stubbed
    stubber.add_client_error(
        "put_object", "PreconditionFailed", http_status_code=412, response_meta={"RetryAttempts": 1}
    )
    stubber.add_response("get_object", {"Body": _body(b"mine"), "ETag": '"e1"'})
    assert store.put("t/x.json", b"mine", if_absent=True) == '"e1"'

    stubber.add_client_error(
        "put_object", "PreconditionFailed", http_status_code=412, response_meta={"RetryAttempts": 1}
    )
    stubber.add_response("get_object", {"Body": _body(b"theirs"), "ETag": '"e2"'})
    with pytest.raises(VersionConflict):
        store.put("t/x.json", b"mine", if_version='"e0"')
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("method", "code", "status", "expected"),
    [
        ("put", "ConditionalRequestConflict", 409, VersionConflict),
        ("put", "SlowDown", 503, BackendUnavailable),
        ("put", "InternalError", 500, BackendUnavailable),
        ("get", "AccessDenied", 403, BackendError),
        ("get", "NoSuchBucket", 404, BackendError),
        ("get", "SlowDown", 503, BackendUnavailable),
        ("list", "TooManyRequests", 429, BackendUnavailable),
        ("delete", "AccessDenied", 403, BackendError),
    ],
)
def test_error_translation(
    stubbed: tuple[S3ObjectStore, Stubber], method: str, code: str, status: int, expected: type[Exception]
) -> None:
    store, stubber = stubbed
    api = {"put": "put_object", "get": "get_object", "list": "list_objects_v2", "delete": "delete_object"}
    stubber.add_client_error(api[method], code, http_status_code=status)
    calls: dict[str, Callable[[], object]] = {
        "put": lambda: store.put("t/x.json", b"{}", if_version='"e"'),
        "get": lambda: store.get("t/x.json"),
        "list": lambda: store.list_keys("t/"),
        "delete": lambda: store.delete("t/x.json"),
    }
    with pytest.raises(expected) as info:
        calls[method]()
    assert type(info.value) is expected  # BackendError must not be a BackendUnavailable, and back
    assert isinstance(info.value.__cause__, Exception)  # translated at the boundary, chained


def test_absent_key_reads_as_none(stubbed: tuple[S3ObjectStore, Stubber]) -> None:
    store, stubber = stubbed
    stubber.add_client_error("get_object", "NoSuchKey", http_status_code=404)
    assert store.get("t/x.json") is None

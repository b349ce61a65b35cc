"""Objects in an S3 bucket (AWS S3 or a compatible server), laid out as the local store lays out files.

Keys pass through unchanged under an optional ``prefix`` (``<prefix>/<tenant>/tickets/<id>.json``).
A version is the object's ETag, and compare-and-swap uses S3 conditional writes:
``if_absent`` sends ``If-None-Match: *`` and ``if_version`` sends ``If-Match: <etag>``; the
server refuses a lost race with 412 PreconditionFailed (or 409 ConditionalRequestConflict),
which becomes ``VersionConflict``.

Every method blocks; callers on the event loop run them in a worker thread. boto3 clients
are thread-safe, so one store serves all threads. Vendor errors are translated here:
throttling, 5xx, connection failures and timeouts are ``BackendUnavailable`` (retryable);
anything else the server refuses (access denied, missing bucket, ...) is ``BackendError``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from incident_responder.backends.objects.groups import check_group, refused_with_predecessor
from incident_responder.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    InvalidInput,
    VersionConflict,
)
from incident_responder.ports import ObjectWrite, StoredObject

T = TypeVar("T")

_MAX_KEY_BYTES = 1024  # S3's limit on a whole key, prefix included
_PAGE_SIZE = 1000  # S3's maximum MaxKeys
_PUT_MANY_THREADS = 8  # concurrent PUTs of one put_many (botocore pools 10 connections)

# Error codes that mean "try again later" whatever the HTTP status says.
_UNAVAILABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequests",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeoutException",
        "ServiceUnavailable",
        "InternalError",
        "OperationAborted",  # 409: a conflicting operation is in progress, try again
    }
)
_CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})


def make_s3_client(
    *,
    endpoint_url: str | None,
    region: str,
    access_key_id: str | None,
    secret_access_key: str | None,
    connect_timeout: float,
    read_timeout: float,
    max_attempts: int,
) -> Any:
    """A boto3 S3 client with bounded timeouts and botocore's standard retries.

    ``max_attempts`` counts the first try (1 = no retries). Without keys, boto3's usual
    credential chain applies (environment, profile, instance role). A custom endpoint
    (SeaweedFS, MinIO, moto) gets path-style addressing.
    """
    if (access_key_id is None) != (secret_access_key is None):
        raise ConfigError("S3 access key id and secret access key must be given together")
    if connect_timeout <= 0 or read_timeout <= 0:
        raise ConfigError("S3 timeouts must be positive")
    if max_attempts < 1:
        raise ConfigError("S3 max_attempts must be at least 1")
    config = Config(
        region_name=region,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "max_attempts": max_attempts},
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    # A private session: boto3's default session is not thread-safe.
    session = boto3.session.Session(
        aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key, region_name=region
    )
    try:
        return session.client("s3", endpoint_url=endpoint_url, config=config)
    except ValueError as exc:  # e.g. a malformed endpoint URL
        raise ConfigError(f"invalid S3 client settings: {exc}") from exc


def _check_key(key: str) -> None:
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise InvalidInput(f"invalid object key {key!r}")


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _http_status(exc: ClientError) -> int:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return int(status) if isinstance(status, int) else 0


def _retried(exc: ClientError) -> bool:
    return int(exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) or 0) > 0


def _describe(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        message = error.get("Message") or ""
        text = f"{_error_code(exc) or 'error'} (HTTP {_http_status(exc)})"
        return f"{text}: {message}" if message else text
    return str(exc) or type(exc).__name__


def _translate(exc: Exception, what: str) -> BackendError:
    """The service error for a boto error raised while doing ``what``."""
    if isinstance(exc, ClientError):
        code, status = _error_code(exc), _http_status(exc)
        if code in _UNAVAILABLE_CODES or status == 429 or status >= 500:
            return BackendUnavailable(f"S3 {what} failed: {_describe(exc)}")
        return BackendError(f"S3 {what} failed: {_describe(exc)}")
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        # refused/unreachable endpoint, connect or read timeout, connection reset mid-response
        return BackendUnavailable(f"S3 {what} failed: {_describe(exc)}")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return BackendError(f"S3 {what} failed: no usable S3 credentials ({_describe(exc)})")
    return BackendError(f"S3 {what} failed: {_describe(exc)}")


class S3ObjectStore:
    """The :class:`~incident_responder.ports.ObjectStore` in an S3 bucket under ``prefix``: the ETag
    is the version, compare-and-swap is S3's conditional writes."""

    def __init__(self, *, bucket: str, prefix: str = "", client: Any, page_size: int = _PAGE_SIZE) -> None:
        if not bucket:
            raise ConfigError("S3 bucket name is empty")
        stripped = prefix.strip("/")
        if stripped:
            try:
                _check_key(stripped)
            except InvalidInput as exc:
                raise ConfigError(f"invalid S3 key prefix {prefix!r}") from exc
        if not 1 <= page_size <= _PAGE_SIZE:
            raise ConfigError(f"S3 page size must be between 1 and {_PAGE_SIZE}")
        self._bucket = bucket
        self._root = f"{stripped}/" if stripped else ""
        self._client = client
        self._page_size = page_size

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def prefix(self) -> str:
        """The key prefix this store lives under, "" or ending in "/"."""
        return self._root

    def _full(self, key: str) -> str:
        _check_key(key)
        full = self._root + key
        if len(full.encode("utf-8")) > _MAX_KEY_BYTES:
            raise InvalidInput(f"object key {key!r} is longer than S3 allows")
        return full

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, what) from exc

    def get(self, key: str) -> StoredObject | None:
        full = self._full(key)
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=full)
            body = response["Body"]
            try:
                data = body.read()
            finally:
                body.close()
        except ClientError as exc:
            # Only a missing *key* is "absent"; NoSuchBucket (also a 404) is a broken setup.
            if _error_code(exc) == "NoSuchKey":
                return None
            raise _translate(exc, f"get {key}") from exc
        except BotoCoreError as exc:
            raise _translate(exc, f"get {key}") from exc
        return StoredObject(data=bytes(data), version=str(response["ETag"]))

    def put(self, key: str, data: bytes, *, if_version: str | None = None, if_absent: bool = False) -> str:
        full = self._full(key)
        if if_absent and if_version is not None:
            # As in the local store: no object is both absent and at a given version.
            raise VersionConflict(f"{key} cannot be both absent and at version {if_version}")
        params: dict[str, Any] = {"Bucket": self._bucket, "Key": full, "Body": data}
        if if_absent:
            params["IfNoneMatch"] = "*"
        elif if_version is not None:
            params["IfMatch"] = if_version
        try:
            response = self._client.put_object(**params)
        except ClientError as exc:
            code, status = _error_code(exc), _http_status(exc)
            conditional = if_absent or if_version is not None
            # If-Match on a missing key answers 404 NoSuchKey on AWS and moto (412 on SeaweedFS).
            lost = (
                code in _CONFLICT_CODES or status == 412 or (if_version is not None and code == "NoSuchKey")
            )
            if conditional and lost:
                if _retried(exc):
                    # botocore retried after a timeout or 5xx: the first attempt may have
                    # landed, and the retry then lost against our own write. Same bytes stored
                    # means the write took effect, so report it as ours.
                    current = self.get(key)
                    if current is not None and current.data == data:
                        return current.version
                reason = "already exists" if if_absent else "changed since it was read"
                raise VersionConflict(f"{key} {reason}") from exc
            raise _translate(exc, f"put {key}") from exc
        except BotoCoreError as exc:
            raise _translate(exc, f"put {key}") from exc
        return str(response["ETag"])

    def put_many(self, writes: Sequence[ObjectWrite]) -> list[str | VersionConflict]:
        """Concurrent conditional PUTs (S3 has no multi-object write); each keeps its own
        condition. A write ``after`` another is sent once that one has landed (one more
        round per level of such writes)."""
        check_group(writes)
        results: dict[str, str | VersionConflict] = {}

        def one(write: ObjectWrite) -> str | VersionConflict:
            try:
                return self.put(write.key, write.data, if_version=write.if_version, if_absent=write.if_absent)
            except VersionConflict as conflict:
                return conflict

        todo = list(writes)
        while todo:
            ready = [w for w in todo if w.after is None or w.after in results]
            todo = [w for w in todo if not (w.after is None or w.after in results)]
            send = []
            for write in ready:
                refused = refused_with_predecessor(write, results)
                if refused is not None:
                    results[write.key] = refused
                else:
                    send.append(write)
            if len(send) <= 1:
                landed = [one(w) for w in send]
            else:
                with ThreadPoolExecutor(max_workers=min(len(send), _PUT_MANY_THREADS)) as pool:
                    landed = list(pool.map(one, send))
            results.update((w.key, r) for w, r in zip(send, landed, strict=True))
        return [results[w.key] for w in writes]

    def delete(self, key: str) -> None:
        full = self._full(key)
        self._call(f"delete {key}", lambda: self._client.delete_object(Bucket=self._bucket, Key=full))

    def _pages(self, what: str, params: dict[str, Any], want: int | None) -> list[dict[str, Any]]:
        """ListObjectsV2 pages until the listing ends or ``want`` entries have been seen."""
        pages: list[dict[str, Any]] = []
        seen = 0
        token: str | None = None
        while True:
            page_params = dict(params)
            page_params["MaxKeys"] = self._page_size if want is None else min(self._page_size, want - seen)
            if token is not None:
                page_params["ContinuationToken"] = token
            page: dict[str, Any] = self._call(what, partial(self._client.list_objects_v2, **page_params))
            pages.append(page)
            seen += len(page.get("Contents", [])) + len(page.get("CommonPrefixes", []))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token or (want is not None and seen >= want):
                return pages

    def list_keys(
        self, prefix: str, *, start_after: str | None = None, limit: int | None = None
    ) -> list[str]:
        # One "directory" level, as the local store lists: the delimiter leaves deeper keys out.
        directory, _, _ = prefix.rpartition("/")
        if directory:
            _check_key(directory)
        if limit is not None and limit <= 0:
            return []
        params: dict[str, Any] = {"Bucket": self._bucket, "Prefix": self._root + prefix, "Delimiter": "/"}
        if start_after is not None:
            params["StartAfter"] = self._root + start_after
        keys: list[str] = []
        for page in self._pages(f"list {prefix}", params, limit):
            for entry in page.get("Contents", []):
                key = str(entry["Key"])[len(self._root) :]
                name = key.rpartition("/")[2]
                if name and not name.startswith("."):  # skip folder markers and hidden names
                    keys.append(key)
        return keys[:limit] if limit is not None else keys

    def list_prefixes(self, prefix: str) -> list[str]:
        stripped = prefix.rstrip("/")
        if prefix.strip("/"):
            _check_key(stripped)
        base = self._root + (f"{stripped}/" if prefix.strip("/") else "")
        params: dict[str, Any] = {"Bucket": self._bucket, "Prefix": base, "Delimiter": "/"}
        names: set[str] = set()
        for page in self._pages(f"list {prefix}", params, None):
            for entry in page.get("CommonPrefixes", []):
                name = str(entry["Prefix"])[len(base) :].rstrip("/")
                if name and not name.startswith("."):
                    names.add(name)
        return sorted(names)

    def ping(self) -> None:
        try:
            self._client.head_bucket(Bucket=self._bucket)
        except ClientError as exc:
            status = _http_status(exc)
            if status == 404:
                raise BackendError(f"S3 bucket {self._bucket!r} does not exist") from exc
            if status == 403:
                raise BackendError(
                    f"S3 access to bucket {self._bucket!r} denied: check the credentials and bucket policy"
                ) from exc
            if status == 301:
                raise BackendError(
                    f"S3 bucket {self._bucket!r} is in another region than configured"
                ) from exc
            raise _translate(exc, f"ping of bucket {self._bucket!r}") from exc
        except BotoCoreError as exc:
            raise _translate(exc, f"ping of bucket {self._bucket!r}") from exc

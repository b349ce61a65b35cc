"""Objects as files under a directory, laid out as the S3 keys will be.

Writes are atomic (temp file + fsync + rename + directory fsync) and compare-and-swap
is exact across threads and processes: each key's check-and-write happens under an
``flock`` on a sidecar lock file, so several server processes may share one data dir.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from incident_responder.errors import BackendUnavailable, InvalidInput, VersionConflict
from incident_responder.ports import StoredObject

_LOCK_SUFFIX = ".lock"
_TMP_MARK = ".tmp-"


def _version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


class LocalObjectStore:
    def __init__(self, root: Path) -> None:
        self._root = root.resolve()
        self._root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            raise InvalidInput(f"invalid object key {key!r}")
        return self._root.joinpath(*parts)

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = path.parent / f".{path.name}{_LOCK_SUFFIX}"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def get(self, key: str) -> StoredObject | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BackendUnavailable(f"reading {key} failed: {exc.strerror}") from exc
        return StoredObject(data=data, version=_version(data))

    def put(self, key: str, data: bytes, *, if_version: str | None = None, if_absent: bool = False) -> str:
        path = self._path(key)
        try:
            with self._locked(path):
                if if_absent and path.exists():
                    raise VersionConflict(f"{key} already exists")
                if if_version is not None:
                    current = self.get(key)
                    if current is None or current.version != if_version:
                        raise VersionConflict(f"{key} changed since it was read")
                self._write_atomically(path, data)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise BackendUnavailable(f"writing {key} failed: disk full") from exc
            raise BackendUnavailable(f"writing {key} failed: {exc.strerror}") from exc
        return _version(data)

    def _write_atomically(self, path: Path, data: bytes) -> None:
        tmp = path.parent / f".{path.name}{_TMP_MARK}{os.getpid()}-{os.urandom(4).hex()}"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            with self._locked(path):
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise BackendUnavailable(f"deleting {key} failed: {exc.strerror}") from exc

    def list_keys(
        self, prefix: str, *, start_after: str | None = None, limit: int | None = None
    ) -> list[str]:
        # Keys are listed per directory level; our layouts put all objects of a
        # listing in one directory (``<tenant>/tickets/``), as S3 prefixes would.
        directory, _, name_prefix = prefix.rpartition("/")
        base = self._path(directory) if directory else self._root
        try:
            names = sorted(
                entry.name
                for entry in os.scandir(base)
                if entry.is_file() and not entry.name.startswith(".") and entry.name.startswith(name_prefix)
            )
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise BackendUnavailable(f"listing {prefix} failed: {exc.strerror}") from exc
        keys = [f"{directory}/{n}" if directory else n for n in names]
        if start_after is not None:
            keys = [k for k in keys if k > start_after]
        return keys[:limit] if limit is not None else keys

    def list_prefixes(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self._root
        try:
            return sorted(e.name for e in os.scandir(base) if e.is_dir() and not e.name.startswith("."))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise BackendUnavailable(f"listing {prefix} failed: {exc.strerror}") from exc

    def ping(self) -> None:
        if not os.access(self._root, os.W_OK):
            raise BackendUnavailable(f"data dir {self._root} is not writable")

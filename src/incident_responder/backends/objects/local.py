"""Objects as files under a directory, laid out as the S3 keys will be.

Writes are atomic (temp file + fsync + rename + directory fsync) and compare-and-swap
is exact across threads and processes: each key's check-and-write happens under an
``flock`` on one of 1,024 lock files under ``.locks/`` (chosen by a hash of the key), so
several server processes may share one data dir. Striped, not one lock file per key: a
new object then creates one file, not two (and a million incidents do not leave a
million empty lock files behind); two keys of one stripe just take turns.

``put_many`` is a group commit: every temp file is written, then one ``syncfs(2)``
makes them all durable before any rename, and a second one makes the renames durable.
Two journal flushes for the whole group instead of two per file (on Linux; elsewhere
it falls back to an fsync per file and per directory). Renames happen in the order of
the writes, so a write ``after`` another is renamed after it (the journal replays
renames in order: a crash cannot keep the second without the first).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from incident_responder.backends.objects.groups import check_group, refused_with_predecessor
from incident_responder.errors import BackendUnavailable, InvalidInput, VersionConflict
from incident_responder.ports import ObjectWrite, StoredObject

_LOCK_STRIPES = 1024
_LOCKS_DIR = ".locks"  # keys may not start with ".": no object lives here
_TMP_MARK = ".tmp-"


def _version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _find_syncfs() -> Callable[[int], int] | None:
    """libc's ``syncfs(fd)`` (Linux), or None where there is none."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
    return fn


class LocalObjectStore:
    def __init__(self, root: Path, *, group_sync: bool = True) -> None:
        self._root = root.resolve()
        self._root.mkdir(parents=True, exist_ok=True)
        self._syncfs = _find_syncfs() if group_sync else None
        self._dirs: set[Path] = set()  # directories known to exist (set.add is atomic under the GIL)
        (self._root / _LOCKS_DIR).mkdir(exist_ok=True)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            raise InvalidInput(f"invalid object key {key!r}")
        return self._root.joinpath(*parts)

    def _ensure_dir(self, directory: Path) -> None:
        if directory not in self._dirs:  # one mkdir per directory, not one per write
            directory.mkdir(parents=True, exist_ok=True)
            self._dirs.add(directory)

    @contextlib.contextmanager
    def _locked(self, paths: Iterable[Path]) -> Iterator[None]:
        """Hold the lock stripes of ``paths``, taken in one order by every writer (no deadlock)."""
        # by the key, not the absolute path: processes that mount the dir elsewhere agree
        stripes = sorted(
            {zlib.crc32(p.relative_to(self._root).as_posix().encode()) % _LOCK_STRIPES for p in paths}
        )
        fds: list[int] = []
        try:
            for stripe in stripes:
                fds.append(os.open(self._root / _LOCKS_DIR / f"{stripe:04d}", os.O_RDWR | os.O_CREAT, 0o600))
                fcntl.flock(fds[-1], fcntl.LOCK_EX)
            yield
        finally:
            for fd in fds:
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

    def _conflict(
        self, key: str, path: Path, if_version: str | None, if_absent: bool
    ) -> VersionConflict | None:
        """Why the condition of a write fails now (call with the key's lock held), or None."""
        if if_absent and path.exists():
            return VersionConflict(f"{key} already exists")
        if if_version is not None:
            current = self.get(key)
            if current is None or current.version != if_version:
                return VersionConflict(f"{key} changed since it was read")
        return None

    def put(self, key: str, data: bytes, *, if_version: str | None = None, if_absent: bool = False) -> str:
        path = self._path(key)
        try:
            self._ensure_dir(path.parent)
            with self._locked([path]):
                conflict = self._conflict(key, path, if_version, if_absent)
                if conflict is not None:
                    raise conflict
                self._write_atomically(path, data)
        except OSError as exc:
            raise _write_failed(key, exc) from exc
        return _version(data)

    def put_many(self, writes: Sequence[ObjectWrite]) -> list[str | VersionConflict]:
        check_group(writes)
        paths = [self._path(w.key) for w in writes]
        results: dict[str, str | VersionConflict] = {}
        staged: list[tuple[Path, Path]] = []  # (final path, temp file), in write order
        renamed = 0
        try:
            for path in paths:
                self._ensure_dir(path.parent)
            with self._locked(paths):
                try:
                    for write, path in zip(writes, paths, strict=True):
                        conflict = refused_with_predecessor(write, results) or self._conflict(
                            write.key, path, write.if_version, write.if_absent
                        )
                        if conflict is not None:
                            results[write.key] = conflict
                            continue
                        staged.append((path, self._stage(path, write.data, sync=self._syncfs is None)))
                        results[write.key] = _version(write.data)
                    self._sync_all()  # every temp file durable before the first rename
                    for path, tmp in staged:
                        os.replace(tmp, path)
                        renamed += 1
                finally:
                    for _, tmp in staged[renamed:]:
                        with contextlib.suppress(OSError):
                            tmp.unlink()
                self._sync_dirs({p.parent for p in paths})
        except OSError as exc:
            raise _write_failed(f"{len(writes)} objects", exc) from exc
        return [results[w.key] for w in writes]

    def _stage(self, path: Path, data: bytes, *, sync: bool) -> Path:
        """Write ``data`` to a temp file beside ``path`` (fsynced if ``sync``)."""
        tmp = path.parent / f".{path.name}{_TMP_MARK}{os.getpid()}-{os.urandom(4).hex()}"
        try:
            try:
                fh = open(tmp, "wb")  # noqa: SIM115 (closed by the with below)
            except FileNotFoundError:  # the directory was removed since it was made: again
                path.parent.mkdir(parents=True, exist_ok=True)
                fh = open(tmp, "wb")  # noqa: SIM115
            with fh:
                fh.write(data)
                if sync:
                    fh.flush()
                    os.fsync(fh.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return tmp

    def _sync_all(self) -> None:
        """Flush the whole file system of the store once (no-op without syncfs: files were fsynced)."""
        if self._syncfs is None:
            return
        fd = os.open(self._root, os.O_RDONLY)
        try:
            if self._syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
        finally:
            os.close(fd)

    def _sync_dirs(self, directories: set[Path]) -> None:
        if self._syncfs is not None:
            self._sync_all()
            return
        for directory in directories:
            _fsync_dir(directory)

    def _write_atomically(self, path: Path, data: bytes) -> None:
        tmp = self._stage(path, data, sync=True)
        try:
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(path.parent)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            with self._locked([path]):
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


def _fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_failed(what: str, exc: OSError) -> BackendUnavailable:
    if exc.errno == errno.ENOSPC:
        return BackendUnavailable(f"writing {what} failed: disk full")
    return BackendUnavailable(f"writing {what} failed: {exc.strerror}")

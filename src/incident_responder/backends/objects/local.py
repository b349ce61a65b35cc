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
import itertools
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
_READ_SIZE = 1 << 16  # a ticket is a few KiB: one read, then the empty read at the end


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
    """The :class:`~incident_responder.ports.ObjectStore` as files under ``root``: atomic writes,
    compare-and-swap under ``flock`` (processes may share the directory), group commits."""

    def __init__(self, root: Path, *, group_sync: bool = True) -> None:
        self._root = root.resolve()
        self._root.mkdir(parents=True, exist_ok=True)
        self._base = str(self._root)
        self._syncfs = _find_syncfs() if group_sync else None
        self._dirs: set[str] = set()  # directories known to exist (set.add is atomic under the GIL)
        self._temp_names = itertools.count()  # next() is atomic under the GIL
        (self._root / _LOCKS_DIR).mkdir(exist_ok=True)

    # Paths are plain strings and files are handled with os.open/read/write/close: under
    # load a group commit runs beside the event loop, and every system call releases the
    # GIL and waits to take it back. Python's open() makes 6 calls to write a file and
    # read_bytes() 9 (fstat, isatty's ioctl, lseeks); these make 3 and 4.

    def _path(self, key: str) -> str:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            raise InvalidInput(f"invalid object key {key!r}")
        return os.path.join(self._base, *parts)

    def _ensure_dir(self, directory: str) -> None:
        if directory not in self._dirs:  # one mkdir per directory, not one per write
            os.makedirs(directory, exist_ok=True)
            self._dirs.add(directory)

    @contextlib.contextmanager
    def _locked(self, keys: Iterable[str]) -> Iterator[None]:
        """Hold the lock stripes of ``keys``, taken in one order by every writer (no deadlock)."""
        # by the key, not the absolute path: processes that mount the dir elsewhere agree
        stripes = sorted({zlib.crc32(key.encode()) % _LOCK_STRIPES for key in keys})
        locks = os.path.join(self._base, _LOCKS_DIR)
        fds: list[int] = []
        try:
            for stripe in stripes:
                fds.append(os.open(f"{locks}/{stripe:04d}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
                fcntl.flock(fds[-1], fcntl.LOCK_EX)
            yield
        finally:
            for fd in fds:
                os.close(fd)  # closing releases the flock

    def get(self, key: str) -> StoredObject | None:
        try:
            data = _read(self._path(key))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BackendUnavailable(f"reading {key} failed: {exc.strerror}") from exc
        return StoredObject(data=data, version=_version(data))

    def _conflict(
        self, key: str, path: str, if_version: str | None, if_absent: bool
    ) -> VersionConflict | None:
        """Why the condition of a write fails now (call with the key's lock held), or None."""
        if if_absent and os.path.exists(path):
            return VersionConflict(f"{key} already exists")
        if if_version is not None:
            current = self.get(key)
            if current is None or current.version != if_version:
                return VersionConflict(f"{key} changed since it was read")
        return None

    def put(self, key: str, data: bytes, *, if_version: str | None = None, if_absent: bool = False) -> str:
        path = self._path(key)
        try:
            self._ensure_dir(os.path.dirname(path))
            with self._locked([key]):
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
        directories = {os.path.dirname(p) for p in paths}
        results: dict[str, str | VersionConflict] = {}
        staged: list[tuple[str, str]] = []  # (final path, temp file), in write order
        renamed = 0
        try:
            for directory in directories:
                self._ensure_dir(directory)
            with self._locked([w.key for w in writes]):
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
                            os.unlink(tmp)
                self._sync_dirs(directories)
        except OSError as exc:
            raise _write_failed(f"{len(writes)} objects", exc) from exc
        return [results[w.key] for w in writes]

    def _stage(self, path: str, data: bytes, *, sync: bool) -> str:
        """Write ``data`` to a temp file beside ``path`` (fsynced if ``sync``). Its name is
        unique by process id and a per-store counter."""
        directory, name = os.path.split(path)
        tmp = f"{directory}/.{name}{_TMP_MARK}{os.getpid()}-{next(self._temp_names)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileNotFoundError:  # the directory was removed since it was made: again
            os.makedirs(directory, exist_ok=True)
            fd = os.open(tmp, flags, 0o666)
        try:
            try:
                _write_all(fd, data)
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return tmp

    def _sync_all(self) -> None:
        """Flush the whole file system of the store once (no-op without syncfs: files were fsynced)."""
        if self._syncfs is None:
            return
        fd = os.open(self._base, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if self._syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
        finally:
            os.close(fd)

    def _sync_dirs(self, directories: set[str]) -> None:
        if self._syncfs is not None:
            self._sync_all()
            return
        for directory in directories:
            _fsync_dir(directory)

    def _write_atomically(self, path: str, data: bytes) -> None:
        tmp = self._stage(path, data, sync=True)
        try:
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(os.path.dirname(path))

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            with self._locked([key]), contextlib.suppress(FileNotFoundError):
                os.unlink(path)
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


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, _READ_SIZE):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:  # a regular file does not do this; never loop on it
            raise OSError(errno.EIO, "the write made no progress")
        view = view[written:]


def _fsync_dir(directory: str) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_failed(what: str, exc: OSError) -> BackendUnavailable:
    if exc.errno == errno.ENOSPC:
        return BackendUnavailable(f"writing {what} failed: disk full")
    return BackendUnavailable(f"writing {what} failed: {exc.strerror}")

"""Locks of one process: per key, on its event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


class MemoryLocks:
    """The in-process :class:`~incident_responder.ports.LockProvider`: one asyncio lock per key,
    dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, ...], tuple[asyncio.Lock, int]] = {}

    @contextmanager
    def _ref(self, key: tuple[str, ...]) -> Iterator[asyncio.Lock]:
        lock, refs = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, refs + 1)
        try:
            yield lock
        finally:
            lock, refs = self._locks[key]
            if refs == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, refs - 1)

    def hold(self, *key: str) -> _Held:
        return _Held(self, key)


@dataclass
class _Held:
    owner: MemoryLocks
    key: tuple[str, ...]

    async def __aenter__(self) -> None:
        self._ctx = self.owner._ref(self.key)
        self._lock = self._ctx.__enter__()
        try:
            await self._lock.acquire()
        except BaseException:
            self._ctx.__exit__(None, None, None)
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()
        self._ctx.__exit__(None, None, None)

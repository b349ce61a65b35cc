"""Outage switches around the REAL backends: each call goes to the real store/index
unless the switch says the backend is down (error) or slow (sleep first)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from incident_responder.errors import BackendUnavailable, VersionConflict
from incident_responder.ports import (
    ObjectStore,
    ObjectWrite,
    StoredObject,
    VectorFilter,
    VectorHit,
    VectorIndex,
    VectorPoint,
)


@dataclass
class Switch:
    down: bool = False
    delay: float = 0.0
    calls: int = 0

    def check(self, what: str) -> None:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if self.down:
            raise BackendUnavailable(f"{what}: connection refused (injected outage)")


class FlakyStore:
    def __init__(self, inner: ObjectStore, switch: Switch) -> None:
        self.inner, self.switch = inner, switch

    def get(self, key: str) -> StoredObject | None:
        self.switch.check("store")
        return self.inner.get(key)

    def put(self, key: str, data: bytes, *, if_version: str | None = None, if_absent: bool = False) -> str:
        self.switch.check("store")
        return self.inner.put(key, data, if_version=if_version, if_absent=if_absent)

    def put_many(self, writes: Sequence[ObjectWrite]) -> list[str | VersionConflict]:
        self.switch.check("store")
        return self.inner.put_many(writes)

    def delete(self, key: str) -> None:
        self.switch.check("store")
        self.inner.delete(key)

    def list_keys(
        self, prefix: str, *, start_after: str | None = None, limit: int | None = None
    ) -> list[str]:
        self.switch.check("store")
        return self.inner.list_keys(prefix, start_after=start_after, limit=limit)

    def list_prefixes(self, prefix: str) -> list[str]:
        self.switch.check("store")
        return self.inner.list_prefixes(prefix)

    def ping(self) -> None:
        self.switch.check("store")
        self.inner.ping()


class FlakyIndex:
    def __init__(self, inner: VectorIndex, switch: Switch) -> None:
        self.inner, self.switch = inner, switch

    def upsert(self, points: Sequence[VectorPoint]) -> None:
        self.switch.check("index")
        self.inner.upsert(points)

    def search(self, vector: Any, where: VectorFilter, limit: int) -> list[VectorHit]:
        self.switch.check("index")
        return self.inner.search(vector, where, limit)

    def find(self, where: VectorFilter, limit: int) -> list[VectorHit]:
        self.switch.check("index")
        return self.inner.find(where, limit)

    def vectors(self, where: VectorFilter) -> list[VectorPoint]:
        self.switch.check("index")
        return self.inner.vectors(where)

    def set_payload(self, where: VectorFilter, payload: Mapping[str, Any]) -> None:
        self.switch.check("index")
        self.inner.set_payload(where, payload)

    def delete(self, where: VectorFilter) -> None:
        self.switch.check("index")
        self.inner.delete(where)

    def exists(self, point_id: str) -> bool:
        self.switch.check("index")
        return self.inner.exists(point_id)

    def close(self) -> None:
        self.inner.close()


class GroupWritesDown:
    """The real store, except that while ``down`` a ``put_many`` holding a write that
    ``refuses`` picks fails (a backend-level fault in the middle of a group): as a whole,
    or with ``partial`` after the writes before the first refused one have landed. With
    ``once``, the first such failure also ends the outage (a transient fault)."""

    def __init__(
        self,
        inner: ObjectStore,
        refuses: Callable[[ObjectWrite], bool],
        what: str,
        *,
        partial: bool = False,
        once: bool = False,
    ) -> None:
        self.inner, self.refuses, self.what, self.partial, self.once = inner, refuses, what, partial, once
        self.down = False
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put_many(self, writes: Sequence[ObjectWrite]) -> list[str | VersionConflict]:
        first = next((i for i, w in enumerate(writes) if self.refuses(w)), None)
        if self.down and first is not None:
            self.refused += 1
            self.down = not self.once
            if self.partial and first > 0:
                self.inner.put_many(writes[:first])
            raise BackendUnavailable(f"{self.what} failed: disk full (injected)")
        return self.inner.put_many(writes)


class Boom(RuntimeError):
    """A simulated crash, raised from a fault-injection hook."""


def crash() -> None:
    raise Boom("simulated crash between the ticket writes and the vector write")

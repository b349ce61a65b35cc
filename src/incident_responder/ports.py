"""The seams between stages and backends. Adapters satisfy these structurally.

Every method here is blocking unless it is declared ``async``; callers on the event
loop push blocking calls to a worker thread (see ``pipeline.responder``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from incident_responder.errors import VersionConflict
from incident_responder.models import (
    DeadLetter,
    IdempotencyRecord,
    IncidentReport,
    Recommendation,
    RunbookChunk,
)
from incident_responder.notifications.model import (
    Channel,
    ChannelKind,
    MessageState,
    Notice,
    OutboxMessage,
    Rendered,
)

Vector = npt.NDArray[np.float32]


class Embedder(Protocol):
    """Turns texts into L2-normalized vectors."""

    @property
    def dim(self) -> int:
        """Length of every vector this embedder returns."""
        ...

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Return an array of shape (len(texts), dim), each row L2-normalized."""
        ...


@dataclass(frozen=True)
class VectorPoint:
    """One point of a :class:`VectorIndex`: its id, its vector, and its payload (the fields filters match)."""

    id: str
    vector: Vector
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class VectorHit:
    """A point a query found: its id, its score (cosine similarity; 0 when not ranked) and its payload."""

    id: str
    score: float
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class VectorFilter:
    """Exact-match conditions on payload fields; every condition must hold: each field of
    ``equals`` has that value, each field of ``any_of`` one of those values (non-empty)."""

    equals: Mapping[str, str] = field(default_factory=dict)
    any_of: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, values in self.any_of.items():
            if isinstance(values, str) or not values:
                raise ValueError(f"any_of[{key!r}] must be a non-empty list of values")

    @property
    def empty(self) -> bool:
        """No condition at all (matches every point)."""
        return not self.equals and not self.any_of


class VectorIndex(Protocol):
    """A persistent vector index with keyword payload filters (cosine similarity)."""

    def upsert(self, points: Sequence[VectorPoint]) -> None:
        """Insert or replace points; durable when this returns."""
        ...

    def search(self, vector: Vector, where: VectorFilter, limit: int) -> list[VectorHit]:
        """The ``limit`` nearest points that satisfy ``where``, best first."""
        ...

    def find(self, where: VectorFilter, limit: int) -> list[VectorHit]:
        """Points that satisfy ``where`` without ranking (score 0)."""
        ...

    def vectors(self, where: VectorFilter) -> list[VectorPoint]:
        """Every point that satisfies ``where``, with its vector."""
        ...

    def set_payload(self, where: VectorFilter, payload: Mapping[str, Any]) -> None:
        """Merge ``payload`` into every point that satisfies ``where``."""
        ...

    def delete(self, where: VectorFilter) -> None:
        """Delete every point that satisfies ``where``."""
        ...

    def exists(self, point_id: str) -> bool:
        """Whether a point with this id is stored."""
        ...

    def count(self, where: VectorFilter) -> int:
        """How many points satisfy ``where`` (exactly)."""
        ...

    def close(self) -> None:
        """Flush and release the index."""
        ...


@dataclass(frozen=True)
class StoredObject:
    """An object as read from an :class:`ObjectStore`: its bytes and the version to compare-and-swap on."""

    data: bytes
    version: str


@dataclass(frozen=True)
class ObjectWrite:
    """One write of :meth:`ObjectStore.put_many`, with the conditions of :meth:`ObjectStore.put`.

    ``after`` names the key of an earlier write of the same group: this write lands only
    if that one does (else it is refused with a ``VersionConflict`` too), and never before
    it (a crash may leave the first without the second, never the reverse).
    """

    key: str
    data: bytes
    if_version: str | None = None
    if_absent: bool = False
    after: str | None = None


class ObjectStore(Protocol):
    """Keyed JSON documents with compare-and-swap writes (laid out as S3 keys)."""

    def get(self, key: str) -> StoredObject | None:
        """The object and its version, or None if absent."""
        ...

    def put(self, key: str, data: bytes, *, if_version: str | None = None, if_absent: bool = False) -> str:
        """Write atomically and return the new version.

        ``if_absent`` fails with ``VersionConflict`` if the key exists; ``if_version``
        fails with ``VersionConflict`` unless the stored version equals it.
        """
        ...

    def put_many(self, writes: Sequence[ObjectWrite]) -> list[str | VersionConflict]:
        """Several writes as one group commit (keys must differ; an ``after`` must name an
        earlier write of the group, else ``InvalidInput``): per write, the new version or the
        ``VersionConflict`` that refused it. A store failure raises ``BackendUnavailable``
        (or another ``BackendError``); then any subset of the writes may have landed, though
        never a write without the one it comes ``after``."""
        ...

    def delete(self, key: str) -> None:
        """Remove the key; absent keys are ignored."""
        ...

    def list_keys(
        self, prefix: str, *, start_after: str | None = None, limit: int | None = None
    ) -> list[str]:
        """Keys under ``prefix`` in lexicographic order, after ``start_after``."""
        ...

    def list_prefixes(self, prefix: str) -> list[str]:
        """The next path segments under ``prefix`` (S3 common prefixes), e.g. tenants under ""."""
        ...

    def ping(self) -> None:
        """Raise ``BackendUnavailable`` unless the store answers."""
        ...


class LockProvider(Protocol):
    """Mutual exclusion per key (tenant, service, ...): in-process or across replicas."""

    def hold(self, *key: str) -> AbstractAsyncContextManager[None]:
        """An async context manager that holds the lock for ``key``."""
        ...


class WriteLock(Protocol):
    """Takes turns among processes writing one tenant's tickets (blocking). Best effort:
    compare-and-swap stays the guard, so a lock that cannot be had lets the write go on."""

    def hold(self, tenant: str) -> AbstractContextManager[None]:
        """A context manager that holds the turn of ``tenant``'s ticket writes."""
        ...


class IdempotencyStore(Protocol):
    """Stored responses of requests that carried an Idempotency-Key (expire after a TTL; at most
    a configured number per tenant, the oldest forgotten first)."""

    def get(self, tenant: str, key: str) -> IdempotencyRecord | None:
        """The live record for ``key`` of ``tenant``, or None."""
        ...

    def put(self, tenant: str, key: str, record: IdempotencyRecord) -> None:
        """Store the record (overwrites an expired one)."""
        ...

    def sweep(self, tenant: str) -> int:
        """Forget the tenant's expired records and its oldest beyond the store's cap; how many."""
        ...


class VectorCache(Protocol):
    """Remembered embeddings by key: in this process (an LRU) or shared by replicas (Redis).
    A cache never fails a caller: a store that cannot answer answers a miss."""

    @property
    def blocking(self) -> bool:
        """True if calls wait on the network: make them off the event loop."""
        ...

    def get(self, key: str) -> Vector | None:
        """The vector stored under ``key``, or None."""
        ...

    def put(self, key: str, value: Vector) -> None:
        """Remember ``value`` under ``key`` (it may be evicted or expire later)."""
        ...


class DeadLetterQueue(Protocol):
    """Reports accepted while a backend was down, kept durably until applied once."""

    def put(self, tenant: str, incident_id: str, report: IncidentReport, error: str) -> None:
        """Durably record a report; it is on durable storage when this returns."""
        ...

    def get(self, tenant: str, incident_id: str) -> DeadLetter | None:
        """The letter for ``incident_id`` of ``tenant`` while it waits, else None."""
        ...

    def pending(self, limit: int = 100) -> list[DeadLetter]:
        """Letters to replay now, oldest first (as far as the queue keeps order)."""
        ...

    def mark_done(self, incident_id: str) -> None:
        """The letter was applied: never hand it out again."""
        ...

    def mark_failed(self, incident_id: str, error: str) -> None:
        """The replay failed: keep the letter for a later attempt."""
        ...

    def depth(self) -> int:
        """How many letters wait."""
        ...


class Recommender(Protocol):
    """Writes a recommendation grounded in the retrieved runbook chunks."""

    @property
    def name(self) -> str:
        """Short name reported as ``recommendation.source``."""
        ...

    @property
    def remote(self) -> bool:
        """True if answers come from a network service (calls are made concurrently); False
        if they are computed in process (a group's calls run in one worker-thread hop)."""
        ...

    def recommend(
        self, log: str, chunks: Sequence[RunbookChunk], titles: Mapping[str, str]
    ) -> Recommendation | None:
        """A recommendation citing only runbooks in ``chunks``; None if there is nothing to ground it in."""
        ...


class Outbox(Protocol):
    """Notifications waiting to be delivered, kept durably (at least once).

    A stream is (tenant, channel id, ticket id): its messages are handed out one at a time
    in the order they were put, the next only once the one before is ``sent`` or ``bury``-ed,
    so a channel never hears a ticket's resolution before its opening."""

    def put(self, messages: Sequence[OutboxMessage]) -> None:
        """Store messages (durable when this returns); a message id already stored, in any
        state, is left as it is (putting the same message twice delivers it once)."""
        ...

    def claim(self, now: float, limit: int, lease: float) -> list[OutboxMessage]:
        """At most ``limit`` pending messages due at ``now`` (``next_at <= now``), each the
        first undelivered one of its stream, oldest first; each is leased: not handed out
        again before ``now + lease`` unless ``retry`` sets another time."""
        ...

    def sent(self, message_id: str) -> None:
        """Delivered: never hand it out again; its stream's next message becomes due. (This and
        ``retry``/``bury`` do nothing to a message that is not pending.)"""
        ...

    def retry(self, message_id: str, next_at: float, error: str, *, counted: bool = True) -> None:
        """The attempt failed: count it (unless not ``counted``: it was not made), keep
        ``error``, hand it out again at ``next_at``."""
        ...

    def bury(self, message_id: str, error: str) -> None:
        """Given up: count the attempt, move it to the dead list; its stream goes on."""
        ...

    def get(self, message_id: str) -> OutboxMessage | None:
        """The message in whatever state it is, or None."""
        ...

    def listing(self, state: MessageState, limit: int = 100) -> list[OutboxMessage]:
        """Messages in ``state``, oldest first."""
        ...

    def replay(self, message_id: str, now: float) -> bool:
        """Move a dead message back to pending, due at ``now`` (at the end of its stream), its
        attempts counted from 0 again; False if there is no dead message of that id."""
        ...

    def counts(self) -> dict[MessageState, int]:
        """How many messages are in each state."""
        ...

    def purge(self, sent_before: float) -> int:
        """Forget delivered messages created before ``sent_before``; how many."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class Notifier(Protocol):
    """Renders notices for one channel kind (Slack, PagerDuty, a generic webhook)."""

    @property
    def kind(self) -> ChannelKind:
        """The channel kind this notifier renders for."""
        ...

    def render(self, channel: Channel, notice: Notice) -> Rendered:
        """The request that delivers ``notice`` to ``channel``: URL, exact JSON body, fixed headers."""
        ...

    def sign(self, channel: Channel, message_id: str, body: str, timestamp: int) -> dict[str, str]:
        """Headers computed at each delivery attempt (a signature over the body at
        ``timestamp``, unix seconds); empty for kinds that sign nothing."""
        ...

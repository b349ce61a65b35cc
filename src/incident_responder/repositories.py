"""Typed documents over the ObjectStore, one repository per kind, tenant-scoped keys.

Layout (identical on local disk and S3)::

    <tenant>/tickets/<ticket_id>.json
    <tenant>/incidents/<incident_id>.json
    <tenant>/runbooks/<runbook_id>.json
    <tenant>/pending/group-<ticket_id>.json   intent marker of new tickets whose vectors may be missing
    <tenant>/meta/normalizer.json             the normalizer version every ticket was brought to
    <tenant>/idempotency/...                  Idempotency-Key records (backends/idempotency/objects.py)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

from pydantic import BaseModel

from incident_responder.errors import InvalidInput, NotFound, VersionConflict
from incident_responder.lru import LruCache
from incident_responder.models import IncidentResult, Runbook, Ticket, TicketStatus, utcnow
from incident_responder.ports import ObjectStore, ObjectWrite

PAGE_SCAN = 1_000  # stored tickets one listing request reads at most
_SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


def _dump(model: BaseModel) -> bytes:
    return model.model_dump_json().encode("utf-8")


class TicketRepository:
    """Tickets as JSON objects, compare-and-swap on the store's version.

    Parsed tickets the ticket desk has finished with are kept (``keep``, in ``cache``): the
    next ``get`` of that ticket still reads the stored bytes, and hands the kept object over,
    unparsed, only if their version is the one it was kept with (any other writer, in this
    process or another, changes the version): a storm rewrites the same few tickets, and
    parsing them is costly. ``get`` hands the object over: nobody else is given it until it
    is kept again.
    """

    def __init__(
        self,
        objects: ObjectStore,
        *,
        cache: LruCache[tuple[str, str], tuple[str, Ticket]] | None = None,
        on_lookup: Callable[[bool], None] | None = None,
    ) -> None:
        self._objects = objects
        self._kept = cache
        self._on_lookup = on_lookup

    @staticmethod
    def key(tenant: str, ticket_id: str) -> str:
        return f"{tenant}/tickets/{ticket_id}.json"

    def get(self, tenant: str, ticket_id: str) -> tuple[Ticket, str]:
        """The ticket and its store version; ``NotFound`` also for other tenants' ids."""
        found = self._objects.get(self.key(tenant, ticket_id)) if _safe_id(ticket_id) else None
        if found is None:
            raise NotFound(f"ticket {ticket_id} not found")
        if self._kept is not None:
            kept = self._kept.pop((tenant, ticket_id))
            hit = kept is not None and kept[0] == found.version
            if self._on_lookup is not None:
                self._on_lookup(hit)
            if hit and kept is not None:
                return kept[1], found.version
        return Ticket.model_validate_json(found.data), found.version

    def keep(self, ticket: Ticket, version: str) -> None:
        """Keep ``ticket`` as stored at ``version`` for the next ``get``; the caller is done with
        it (it must not change it any more)."""
        if self._kept is not None:
            self._kept.put((ticket.tenant, ticket.ticket_id), (version, ticket))

    def exists(self, tenant: str, ticket_id: str) -> bool:
        return self._objects.get(self.key(tenant, ticket_id)) is not None

    def create_many(
        self, tickets: Sequence[Ticket], *, first: ObjectWrite | None = None, also: Sequence[ObjectWrite] = ()
    ) -> list[str]:
        """Create several new tickets in one group commit, after the write ``first`` (if
        given) and with the writes ``also`` (which may come ``after`` a ticket); refuses
        (``VersionConflict``) if any ticket exists that is not this write's own (see
        :meth:`_commit`)."""
        after = None if first is None else first.key
        writes = [
            ObjectWrite(self.key(t.tenant, t.ticket_id), _dump(t), if_absent=True, after=after)
            for t in tickets
        ]
        written = self._commit([] if first is None else [first], writes, also)
        for result in written:
            if isinstance(result, VersionConflict):
                raise result
        return [str(r) for r in written]

    def _commit(
        self, lead: Sequence[ObjectWrite], writes: Sequence[ObjectWrite], also: Sequence[ObjectWrite]
    ) -> list[str | VersionConflict]:
        """One ``put_many`` of ``lead``, the ticket ``writes`` and ``also``; per ticket write,
        its version or the ``VersionConflict`` that refused it.

        A ticket write refused while the ticket holds exactly its bytes is its own: the
        store's retry policy retried a group that had partly landed (a ticket's bytes carry
        ids and timestamps that no other write has). It counts as written, and the writes of
        ``also`` that come after it, refused with it, are written now."""
        results = self._objects.put_many([*lead, *writes, *also])
        mine = results[len(lead) : len(lead) + len(writes)]
        ours: dict[str, str] = {}
        for write, result in zip(writes, mine, strict=True):
            if isinstance(result, VersionConflict):
                stored = self._objects.get(write.key)
                if stored is not None and stored.data == write.data:
                    ours[write.key] = stored.version
        if ours:
            followers = [
                replace(w, after=None)
                for w, r in zip(also, results[len(lead) + len(writes) :], strict=True)
                if isinstance(r, VersionConflict) and w.after in ours
            ]
            if followers:
                self._objects.put_many(followers)
        return [ours.get(w.key, r) for w, r in zip(writes, mine, strict=True)]

    def update(self, ticket: Ticket, version: str) -> str:
        """Compare-and-swap: raises ``VersionConflict`` if the ticket changed since ``version``."""
        ticket.version += 1
        ticket.updated_at = utcnow()
        return self._objects.put(self.key(ticket.tenant, ticket.ticket_id), _dump(ticket), if_version=version)

    def update_many(
        self, changed: Sequence[tuple[Ticket, str]], *, also: Sequence[ObjectWrite] = ()
    ) -> list[str | VersionConflict]:
        """Compare-and-swap of several tickets in one group commit, with the writes ``also``
        (which may come ``after`` a ticket): per ticket, its new version or the
        ``VersionConflict`` that refused it (see :meth:`_commit`)."""
        now = utcnow()
        writes = []
        for ticket, version in changed:
            ticket.version += 1
            ticket.updated_at = now
            writes.append(
                ObjectWrite(self.key(ticket.tenant, ticket.ticket_id), _dump(ticket), if_version=version)
            )
        return self._commit([], writes, also)

    def normalizer_mark(self, tenant: str) -> str | None:
        """The normalizer version every ticket of ``tenant`` was brought to, if any was."""
        found = self._objects.get(f"{tenant}/meta/normalizer.json")
        return None if found is None else str(json.loads(found.data)["version"])

    def set_normalizer_mark(self, tenant: str, version: str) -> None:
        self._objects.put(f"{tenant}/meta/normalizer.json", json.dumps({"version": version}).encode())

    def iter_all(self, tenant: str) -> Iterator[Ticket]:
        for key in self._objects.list_keys(f"{tenant}/tickets/"):
            found = self._objects.get(key)
            if found is not None:
                yield Ticket.model_validate_json(found.data)

    def page(
        self,
        tenant: str,
        *,
        status: TicketStatus | None,
        service: str | None,
        limit: int,
        cursor: str | None,
        scan: int = PAGE_SCAN,
    ) -> tuple[list[Ticket], str | None]:
        """Tickets oldest first (ids are time-ordered), filtered, ``limit`` at a time.

        One call reads at most ``scan`` stored tickets: a filter that matches few of many
        tickets returns fewer than ``limit`` (maybe none) with a cursor to go on from, so no
        request reads a tenant's every ticket. The cursor is None once nothing is left."""
        if cursor is not None and not _safe_id(cursor):
            raise InvalidInput("invalid cursor")
        start_after = self.key(tenant, cursor) if cursor else None
        keys = self._objects.list_keys(f"{tenant}/tickets/", start_after=start_after, limit=scan + 1)
        out: list[Ticket] = []
        last_key: str | None = None
        for key in keys[:scan]:
            last_key = key
            found = self._objects.get(key)
            if found is None:
                continue
            head = _TicketHead.model_validate_json(found.data)  # the filter reads two fields only
            if (status is None or head.status == status) and (service is None or head.service == service):
                out.append(Ticket.model_validate_json(found.data))
                if len(out) == limit:
                    break
        if last_key is None or last_key == keys[-1]:
            return out, None
        return out, last_key.rsplit("/", 1)[1].removesuffix(".json")


class _TicketHead(BaseModel):
    """The fields of a stored ticket that a listing filters on (the rest is not parsed)."""

    status: TicketStatus
    service: str


class IncidentRepository:
    """The outcome of every report as a JSON object per incident id (``<tenant>/incidents/<id>.json``)."""

    def __init__(self, objects: ObjectStore) -> None:
        self._objects = objects

    @staticmethod
    def writes(tenant: str, results: Sequence[IncidentResult]) -> list[ObjectWrite]:
        """The writes that store ``results``, for a group commit of the caller's."""
        return [ObjectWrite(f"{tenant}/incidents/{r.incident_id}.json", _dump(r)) for r in results]

    def put_many(self, tenant: str, results: Sequence[IncidentResult]) -> None:
        """Store ``results`` now, in one group commit."""
        if results:
            self._objects.put_many(self.writes(tenant, results))

    def get(self, tenant: str, incident_id: str) -> IncidentResult:
        found = self._objects.get(f"{tenant}/incidents/{incident_id}.json") if _safe_id(incident_id) else None
        if found is None:
            raise NotFound(f"incident {incident_id} not found")
        return IncidentResult.model_validate_json(found.data)


class RunbookRepository:
    """Runbooks as JSON objects, one per runbook id (``<tenant>/runbooks/<id>.json``)."""

    def __init__(self, objects: ObjectStore) -> None:
        self._objects = objects

    def put(self, tenant: str, runbook: Runbook) -> None:
        self._objects.put(f"{tenant}/runbooks/{runbook.id}.json", _dump(runbook))

    def get(self, tenant: str, runbook_id: str) -> Runbook | None:
        found = self._objects.get(f"{tenant}/runbooks/{runbook_id}.json") if _safe_id(runbook_id) else None
        return None if found is None else Runbook.model_validate_json(found.data)

    def delete(self, tenant: str, runbook_id: str) -> None:
        self._objects.delete(f"{tenant}/runbooks/{runbook_id}.json")

    def all(self, tenant: str) -> list[Runbook]:
        out = []
        for key in self._objects.list_keys(f"{tenant}/runbooks/"):
            found = self._objects.get(key)
            if found is not None:
                out.append(Runbook.model_validate_json(found.data))
        return out


class PendingMarkers:
    """Intent markers for the ticket-then-vector write pair (see ``pipeline.ticketing``).

    One marker per group of tickets opened together: one object to write and one to delete
    however many tickets the group opens (on S3: one PUT and one DELETE, not one of each per
    ticket). Markers of one ticket each, named after it, from before groups, are still read.
    """

    _GROUP = "group-"

    def __init__(self, objects: ObjectStore) -> None:
        self._objects = objects

    def marker(self, tenant: str, ticket_ids: Sequence[str]) -> ObjectWrite:
        """The write that marks ``ticket_ids`` (non-empty) as being opened, for a group commit
        that writes it before their tickets."""
        key = f"{tenant}/pending/{self._GROUP}{ticket_ids[0]}.json"  # ticket ids are unique
        return ObjectWrite(key, json.dumps({"ticket_ids": list(ticket_ids)}).encode())

    def clear(self, key: str) -> None:
        self._objects.delete(key)

    def all(self, tenant: str) -> list[tuple[str, list[str]]]:
        """Every marker of ``tenant``: its key and the ticket ids it marks."""
        out: list[tuple[str, list[str]]] = []
        for key in self._objects.list_keys(f"{tenant}/pending/"):
            name = key.rsplit("/", 1)[1].removesuffix(".json")
            if not name.startswith(self._GROUP):
                out.append((key, [name]))  # one ticket's marker, from before groups
                continue
            found = self._objects.get(key)
            if found is not None:
                out.append((key, [str(t) for t in json.loads(found.data)["ticket_ids"]]))
        return out


def _safe_id(value: str) -> bool:
    return _SAFE_ID.fullmatch(value) is not None

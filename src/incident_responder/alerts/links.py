"""Source alert -> ticket links: the source's fingerprint is an exact key to its ticket.

Layout: ``<tenant>/alerts/<source>/<fingerprint>.json`` = ``{"ticket_id": ...}``, written in
the group commit of the ticket write that the alert first joined (after the ticket: a link
never names a ticket that was not written). Remembered in an LRU: a link changes only when a
person moves reports between tickets (merge, split), which rewrites it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence

from incident_responder.lru import LruCache
from incident_responder.models import AlertInfo
from incident_responder.ports import ObjectStore, ObjectWrite

_PLAIN = re.compile(r"[A-Za-z0-9_-]{1,64}")


class AlertLinks:
    """Which ticket each source alert of a tenant joined."""

    def __init__(self, objects: ObjectStore, *, cache_size: int = 100_000) -> None:
        self._objects = objects
        self._known: LruCache[tuple[str, str], str] | None = LruCache(cache_size) if cache_size else None

    @staticmethod
    def key(tenant: str, alert: AlertInfo) -> str:
        fingerprint = alert.fingerprint
        if not _PLAIN.fullmatch(fingerprint):  # any text a source sends: a safe, stable name for it
            fingerprint = "h-" + hashlib.sha256(fingerprint.encode()).hexdigest()[:40]
        return f"{tenant}/alerts/{alert.source}/{fingerprint}.json"

    def writes(self, tenant: str, ticket_id: str, alerts: Sequence[AlertInfo]) -> list[ObjectWrite]:
        """The writes that link ``alerts`` to ``ticket_id`` (for the ticket's group commit)."""
        data = json.dumps({"ticket_id": ticket_id}).encode()
        return [ObjectWrite(self.key(tenant, a), data) for a in {a.key: a for a in alerts}.values()]

    def written(self, tenant: str, ticket_id: str, alerts: Sequence[AlertInfo]) -> None:
        """The writes of :meth:`writes` landed: remember them."""
        if self._known is not None:
            for alert in alerts:
                self._known.put((tenant, alert.key), ticket_id)

    def find(self, tenant: str, alert: AlertInfo) -> str | None:
        """The ticket ``alert`` joined, if any."""
        if self._known is not None:
            hit = self._known.get((tenant, alert.key))
            if hit is not None:
                return hit
        found = self._objects.get(self.key(tenant, alert))
        if found is None:
            return None
        ticket_id = str(json.loads(found.data)["ticket_id"])
        if self._known is not None:
            self._known.put((tenant, alert.key), ticket_id)
        return ticket_id

    def forget(self, tenant: str, alert: AlertInfo) -> None:
        """Drop the remembered link (its ticket is gone)."""
        if self._known is not None:
            self._known.pop((tenant, alert.key))

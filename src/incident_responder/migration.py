"""Moving a deployment between backends without losing history.

``copy_objects`` copies every document (tickets, incidents, runbooks, markers,
idempotency records) from one ObjectStore to another, tenant by tenant, skipping
objects the target already holds unchanged. ``reindex`` rebuilds the vector index
from the documents alone (tickets keep the normalized text of every vector they
own), so a new index backend can be filled from the ticket store; tickets made by
older normalizer rules are brought to the current ones on the way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from incident_responder.container import Services
from incident_responder.ports import ObjectStore


@dataclass
class CopyReport:
    """What :func:`copy_objects` did: tenants seen, objects copied, objects already there unchanged."""

    tenants: int = 0
    copied: int = 0
    unchanged: int = 0


def copy_objects(
    source: ObjectStore, target: ObjectStore, progress: Callable[[str], None] | None = None
) -> CopyReport:
    report = CopyReport()
    for tenant in source.list_prefixes(""):
        report.tenants += 1
        for kind in source.list_prefixes(f"{tenant}/"):
            for key in source.list_keys(f"{tenant}/{kind}/"):
                found = source.get(key)
                if found is None:
                    continue  # deleted while we copied
                existing = target.get(key)
                if existing is not None and existing.data == found.data:
                    report.unchanged += 1
                    continue
                target.put(key, found.data)
                report.copied += 1
            if progress is not None:
                progress(f"{tenant}/{kind}")
    return report


@dataclass
class ReindexReport:
    """What :func:`reindex` did: tenants and tickets seen, missing vectors written, runbooks
    loaded, tickets brought to the current normalizer rules."""

    tenants: int = 0
    tickets: int = 0
    vectors_written: int = 0
    runbooks: int = 0
    renormalized: int = 0


def reindex(services: Services) -> ReindexReport:
    """Write every vector the documents say should exist and is missing, tickets made by older
    normalizer rules brought to the current ones first (idempotent)."""
    embedder = services.backends.embedder
    report = ReindexReport()
    tenants = services.tenants()
    for tenant in tenants:
        report.tenants += 1
        services.upkeep.reconcile(tenant, embedder)
        services.tickets.set_normalizer_mark(tenant, "")  # check every ticket again
        report.renormalized += services.upkeep.renormalize(tenant, embedder, services.normalizer.normalize)
        for ticket in services.tickets.iter_all(tenant):
            report.tickets += 1
            report.vectors_written += services.upkeep.reindex_ticket(ticket, embedder)
    # Preloading re-embeds every runbook whose chunk vectors are missing or stale.
    report.runbooks = services.catalog.preload(tenants)
    return report

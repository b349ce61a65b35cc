"""Wires settings + backends into the running service (no module-level singletons)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import structlog

from incident_responder.backends import Backends, build_backends
from incident_responder.metrics import Metrics
from incident_responder.pipeline.analyze import Analyzer
from incident_responder.pipeline.matching import DEFAULT_THRESHOLDS, MatchThresholds
from incident_responder.pipeline.normalize import NORMALIZER_VERSION, LogNormalizer
from incident_responder.pipeline.responder import Responder
from incident_responder.pipeline.retrieve import RunbookLibrary
from incident_responder.pipeline.runbooks import RunbookCatalog
from incident_responder.pipeline.ticketing import TicketDesk
from incident_responder.ports import Embedder
from incident_responder.repositories import (
    IdempotencyRepository,
    IncidentRepository,
    PendingMarkers,
    RunbookRepository,
    TicketRepository,
)
from incident_responder.settings import Settings

log = structlog.get_logger(__name__)

IDEMPOTENCY_TTL_SECONDS = 24 * 3600


@dataclass
class Services:
    settings: Settings
    backends: Backends
    metrics: Metrics
    tickets: TicketRepository
    incidents: IncidentRepository
    idempotency: IdempotencyRepository
    desk: TicketDesk
    catalog: RunbookCatalog
    responder: Responder

    def tenants(self) -> list[str]:
        return self.backends.objects.list_prefixes("")

    def close(self) -> None:
        self.backends.close()


def thresholds_from(settings: Settings) -> MatchThresholds:
    """The calibrated defaults, with whatever the operator overrode."""
    given = {
        k: v
        for k, v in settings.dedup.model_dump(
            include={"auto_merge", "related", "template_similarity"}
        ).items()
        if v is not None
    }
    return dataclasses.replace(DEFAULT_THRESHOLDS, **given)


def _library(settings: Settings) -> RunbookLibrary:
    min_score = settings.retrieval.min_score
    return RunbookLibrary() if min_score is None else RunbookLibrary(min_score=min_score)


def build_services(
    settings: Settings, *, embedder: Embedder | None = None, metrics: Metrics | None = None
) -> Services:
    """Open backends, preload runbooks and repair interrupted writes (blocking)."""
    backends = build_backends(settings, embedder=embedder)
    metrics = metrics or Metrics()
    objects = backends.objects
    tickets = TicketRepository(objects)
    incidents = IncidentRepository(objects)
    desk = TicketDesk(
        tickets=tickets,
        pending=PendingMarkers(objects),
        index=backends.index,
        normalizer_version=NORMALIZER_VERSION,
    )
    catalog = RunbookCatalog(
        repo=RunbookRepository(objects),
        index=backends.index,
        embedder=backends.embedder,
        library_factory=lambda: _library(settings),
        top_k=settings.retrieval.top_k,
    )
    responder = Responder(
        normalizer=LogNormalizer(),
        embedder=backends.embedder,
        analyzer=Analyzer(
            index=backends.index,
            thresholds=thresholds_from(settings),
            search_limit=settings.dedup.search_limit,
        ),
        desk=desk,
        catalog=catalog,
        recommender=backends.recommender,
        incidents=incidents,
        metrics=metrics,
    )
    services = Services(
        settings=settings,
        backends=backends,
        metrics=metrics,
        tickets=tickets,
        incidents=incidents,
        idempotency=IdempotencyRepository(objects, IDEMPOTENCY_TTL_SECONDS),
        desk=desk,
        catalog=catalog,
        responder=responder,
    )
    tenants = services.tenants()
    for tenant in tenants:
        repaired = desk.reconcile(tenant, backends.embedder)
        if repaired:
            metrics.reconciled.inc(repaired)
    metrics.runbooks.set(catalog.preload(tenants))
    log.info("service.ready", tenants=len(tenants))
    return services

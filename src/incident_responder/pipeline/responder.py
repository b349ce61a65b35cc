"""The intake of reports, end to end: normalize -> fingerprint -> embed -> decide (dedup,
then retrieve and recommend for new tickets) -> store -> answer. Async at the edge; every
blocking stage runs in a worker thread (:class:`~incident_responder.pipeline.stages.StageRunner`).

What a composition leaves out is simply absent: without a ``FingerprintLookup`` every
report is embedded and searched, without a ``MicroBatcher`` each request calls the model
alone, without ``TenantVectors`` nothing is remembered (the benchmark's naive server).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import anyio.to_thread
import numpy as np
import structlog

from incident_responder.errors import BackendUnavailable, NotFound
from incident_responder.ids import new_incident_id
from incident_responder.models import DeadLetter, IncidentReport, IncidentResult, utcnow
from incident_responder.notifications.silences import SilenceBook
from incident_responder.observability.metrics import Metrics
from incident_responder.observability.tracing import set_attributes
from incident_responder.pipeline.alert_text import query_text
from incident_responder.pipeline.batching import MicroBatcher
from incident_responder.pipeline.coalescing import Grouper
from incident_responder.pipeline.deciding import Decider, InFlight
from incident_responder.pipeline.dedup import FingerprintLookup
from incident_responder.pipeline.normalize import LogNormalizer, NormalizedLog
from incident_responder.pipeline.runbooks import RunbookCatalog
from incident_responder.pipeline.shadow import Shadow
from incident_responder.pipeline.source_alerts import SourceAlerts, resolves
from incident_responder.pipeline.stages import StageRunner
from incident_responder.pipeline.tenant_vectors import TenantVectors
from incident_responder.pipeline.ticket_upkeep import TicketUpkeep
from incident_responder.ports import DeadLetterQueue, Embedder, Vector
from incident_responder.repositories import IncidentRepository

log = structlog.get_logger(__name__)
T = TypeVar("T")
R = TypeVar("R")
# Text work (normalizing, parsing) on requests holding at most this many characters runs on the
# event loop (less work than a thread hop); more runs in worker threads, _SLICE_CHARS at a time.
_INLINE_CHARS = 2_000
_SLICE_CHARS = 64_000


class Responder:
    """Takes reports and answers, per report, which ticket it joined or opened (or that it was
    queued because a backend is down); looks up a report's outcome; replays dead letters."""

    def __init__(
        self,
        *,
        normalizer: LogNormalizer,
        embedder: Embedder,
        decider: Decider,
        groups: Grouper[InFlight, Awaitable[IncidentResult]],
        upkeep: TicketUpkeep,
        catalog: RunbookCatalog,
        incidents: IncidentRepository,
        dead_letters: DeadLetterQueue,
        metrics: Metrics,
        stages: StageRunner,
        fingerprints: FingerprintLookup | None = None,
        batcher: MicroBatcher | None = None,
        vectors: TenantVectors | None = None,
        alerts: SourceAlerts | None = None,
        silences: SilenceBook | None = None,
        shadow: Shadow | None = None,
    ) -> None:
        self._normalizer = normalizer
        self._embedder = embedder
        self._decider = decider
        self._groups = groups
        self._upkeep = upkeep
        self._catalog = catalog
        self._incidents = incidents
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._stages = stages
        self._fingerprints = fingerprints
        self._batcher = batcher
        self._vectors = vectors
        self._alerts = alerts
        self._silences = silences
        self._shadow = shadow

    async def _in_slices(
        self, stage: str, sizes: Sequence[int], work: Callable[[int, int], list[R]]
    ) -> list[R]:
        """``work(0, len(sizes))``: on the event loop when the items are small (a thread hop costs
        more than the work), else in worker threads, one slice of items of at most
        ``_SLICE_CHARS`` characters at a time, so that a large batch never holds the event loop."""
        if sum(sizes) <= _INLINE_CHARS:
            with self._stages.timed(stage):
                return work(0, len(sizes))
        results: list[R] = []
        start = 0
        while start < len(sizes):
            end, weight = start, 0
            while end < len(sizes) and (end == start or weight + sizes[end] <= _SLICE_CHARS):
                weight += sizes[end]
                end += 1
            results.extend(await self._stages.run(stage, functools.partial(work, start, end)))
            start = end
        return results

    async def _embed(self, tenant: str, texts: list[str]) -> Vector:
        """The vectors of ``texts``: remembered ones from the tenant's cache, the others from the
        model (in a micro-batch shared with concurrent requests, when there is a batcher)."""
        cache = self._vectors
        found: dict[str, Vector] = {}
        if cache is not None:
            found = await self._maybe_off_loop(cache.blocking, lambda: cache.known(tenant, texts))
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            fresh = await self._embed_model(missing)
            new = {t: fresh[i] for i, t in enumerate(missing)}
            if cache is not None:
                await self._maybe_off_loop(cache.blocking, lambda: cache.remember(tenant, new))
            found.update(new)
        return np.stack([found[t] for t in texts]).astype(np.float32, copy=False)

    async def _embed_model(self, texts: list[str]) -> Vector:
        if self._batcher is None:
            return await self._stages.run("embed", lambda: self._embedder.embed(texts))
        with self._stages.timed("embed"):
            return await self._batcher.embed(texts)

    @staticmethod
    async def _maybe_off_loop(blocking: bool, fn: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(fn) if blocking else fn()

    async def handle(self, tenant: str, report: IncidentReport) -> IncidentResult:
        return (await self.handle_batch(tenant, [report]))[0]

    async def handle_batch(self, tenant: str, reports: Sequence[IncidentReport]) -> list[IncidentResult]:
        """Process reports in order, with the same outcome as one request each; source alerts
        that resolved settle their tickets after the others are decided."""
        ending = [i for i, r in enumerate(reports) if resolves(r)]
        if not ending:
            return await self._decide_reports(tenant, reports)
        results: dict[int, IncidentResult] = {}
        others = [i for i in range(len(reports)) if not resolves(reports[i])]
        if others:
            decided = await self._decide_reports(tenant, [reports[i] for i in others])
            results.update(zip(others, decided, strict=True))
        settled = await self._settle_alerts(tenant, [(new_incident_id(), reports[i]) for i in ending])
        results.update(zip(ending, settled, strict=True))
        return [results[i] for i in range(len(reports))]

    async def _settle_alerts(
        self, tenant: str, reports: Sequence[tuple[str, IncidentReport]]
    ) -> list[IncidentResult]:
        alerts = self._alerts
        if alerts is None:  # a composition without alert sources: nothing links to a ticket
            return [IncidentResult(incident_id=i, ticket_id=None, status="resolved") for i, _ in reports]
        outcomes = await self._stages.run("store", lambda: alerts.settle(tenant, reports))
        results = []
        for (incident_id, report), outcome in zip(reports, outcomes, strict=True):
            if isinstance(outcome, BackendUnavailable):
                outcome = await self._queue(tenant, report, incident_id, outcome)
            else:
                self._metrics.count_incident("resolved", report.service, tenant)
            results.append(outcome)
        return results

    async def _decide_reports(self, tenant: str, reports: Sequence[IncidentReport]) -> list[IncidentResult]:
        """Process reports that are not resolved source alerts, in order.

        Reports whose exact fingerprint is already known skip the model, the search and
        the lock: they go straight to the group-commit writer. The others are embedded in
        one model batch and decided in order under their tenant+service locks; those that
        join a ticket are queued to the writer too (every repeat of the batch lands in one
        group commit), and the tickets the batch opens are written as one group.
        """
        started = time.perf_counter()
        norm = self._normalizer.normalize
        norms = await self._in_slices(
            "normalize",
            [len(r.log) for r in reports],
            lambda a, b: [norm(r.log, tenant) for r in reports[a:b]],
        )
        known, via_alert = await self._known_tickets(tenant, reports, norms)
        silenced = await self._silenced(tenant, reports)
        # Unknown reports may open tickets: their runbook query is embedded in the same model
        # batch as their dedup text (the same text for a plain log line: embedded once).
        unknown = [(r, n) for r, n, k in zip(reports, norms, known, strict=True) if k is None]
        queries: list[str] = []
        if unknown and self._catalog.has_runbooks(tenant):
            queries = await self._in_slices(
                "parse",
                [len(r.log) for r, _ in unknown],
                lambda a, b: [query_text(r.log, n.embed_text) for r, n in unknown[a:b]],
            )
        # A source alert joins its linked ticket whatever its text: embedded in case that
        # ticket has not seen its form yet.
        needed = {n.embed_text for n, k, a in zip(norms, known, via_alert, strict=True) if k is None or a}
        texts = sorted(needed | set(queries))
        vectors: dict[str, Vector] = {}
        if texts:
            embedded = await self._embed(tenant, texts)
            vectors = {t: embedded[i] for i, t in enumerate(texts)}
        entries = [
            InFlight(
                report,
                norm,
                new_incident_id(),
                vectors.get(norm.embed_text) if k is None or alert else None,
                k,
                vectors,
                silenced=quiet,
                via_alert=alert,
            )
            for report, norm, k, alert, quiet in zip(reports, norms, known, via_alert, silenced, strict=True)
        ]
        decided: list[Awaitable[IncidentResult]]
        if all(e.known is not None for e in entries):  # repeats only: straight to the writer
            decided = await self._decider.decide(tenant, entries)
        else:  # in the tenant's next group (with the requests that arrive meanwhile, coalesced)
            decided = await self._groups.submit(tenant, entries)
        settled = await asyncio.gather(
            *(self._settle(tenant, e, outcome) for e, outcome in zip(entries, decided, strict=True))
        )
        results = []
        for entry, outcome in zip(entries, settled, strict=True):
            if isinstance(outcome, BackendUnavailable):  # queued in request order: replayed in it
                outcome = await self._queue(tenant, entry.report, entry.incident_id, outcome)
            else:
                self._classified(tenant, entry.report, outcome, started)
            results.append(outcome)
        if self._shadow is not None:
            self._shadow.observe(
                tenant,
                [
                    (e.report.service, e.report.log, e.norm.embed_text, e.vector, r)
                    for e, r in zip(entries, results, strict=True)
                ],
            )
        return results

    async def _known_tickets(
        self, tenant: str, reports: Sequence[IncidentReport], norms: Sequence[NormalizedLog]
    ) -> tuple[list[str | None], list[bool]]:
        """Per report, the ticket it joins without a search (None: unknown): the one its source
        alert joined before, else the one already holding its exact fingerprint; and whether
        it was the source alert's link that said so."""
        lookup, alerts = self._fingerprints, self._alerts
        keys = [(r.service, n.fingerprint) for r, n in zip(reports, norms, strict=True)]
        known: list[str | None] = [None] * len(reports)
        if lookup is not None:
            known = [lookup.cached(tenant, s, fp) for s, fp in keys]
        missing = [i for i, k in enumerate(known) if k is None] if lookup else []
        sourced = [i for i, r in enumerate(reports) if r.alert is not None] if alerts else []
        via_alert = [False] * len(reports)
        if not missing and not sourced:
            return known, via_alert

        def look() -> tuple[dict[tuple[str, str], str], list[str | None]]:
            found = lookup.find_many(tenant, [keys[i] for i in missing]) if lookup and missing else {}
            linked = alerts.linked(tenant, [reports[i].alert for i in sourced]) if alerts else []  # type: ignore[misc]
            return found, linked

        try:
            found, linked = await self._stages.run("fingerprint", look)
        except BackendUnavailable:  # embed these; each then queues or not on its own
            found, linked = {}, [None] * len(sourced)
        for i in missing:
            known[i] = found.get(keys[i])
        for i, ticket_id in zip(sourced, linked, strict=True):
            if ticket_id is not None:
                via_alert[i] = ticket_id != known[i]
                known[i] = ticket_id
        return known, via_alert

    async def _silenced(self, tenant: str, reports: Sequence[IncidentReport]) -> list[bool]:
        """Per report, whether an active silence matches it."""
        book = self._silences
        if book is None:
            return [False] * len(reports)
        now = utcnow()
        return await self._maybe_off_loop(
            not book.fresh(tenant),
            lambda: [book.silenced(tenant, r.service, r.labels, now) for r in reports],
        )

    async def _settle(
        self, tenant: str, entry: InFlight, outcome: Awaitable[IncidentResult]
    ) -> IncidentResult | BackendUnavailable:
        """Wait for the outcome of a report: the result, or why a backend could not take it."""
        report = entry.report
        try:
            try:
                return await outcome
            except NotFound:
                # Its ticket vanished (undone by reconcile) after the fingerprint was cached:
                # decide again, once (a second NotFound, ticket gone but vectors not, propagates).
                if self._fingerprints is not None:
                    self._fingerprints.forget(tenant, report.service, entry.norm.fingerprint)
                if self._alerts is not None and report.alert is not None:
                    self._alerts.forget(tenant, report.alert)
                vector = entry.vector
                if vector is None:
                    vector = (await self._embed(tenant, [entry.norm.embed_text]))[0]
                again = InFlight(
                    report,
                    entry.norm,
                    entry.incident_id,
                    vector,
                    None,
                    entry.embedded,
                    silenced=entry.silenced,
                )
                return await (await self._decider.decide(tenant, [again]))[0]
        except BackendUnavailable as exc:
            return exc

    async def _queue(
        self, tenant: str, report: IncidentReport, incident_id: str, exc: BackendUnavailable
    ) -> IncidentResult:
        # Accepted but not applicable now: keep it durably and answer 202. If even
        # the dead-letter write fails, this raises and the caller answers 503.
        error = exc.message
        await self._stages.run("dlq", lambda: self._dead_letters.put(tenant, incident_id, report, error))
        self._metrics.dlq_events.labels("queued").inc()
        self._metrics.count_incident("queued", report.service, tenant)
        log.warning(
            "incident.queued",
            tenant=tenant,
            service=report.service,
            incident_id=incident_id,
            error=exc.code,
        )
        return IncidentResult(incident_id=incident_id, ticket_id=None, status="queued")

    async def replay(self, letter: DeadLetter) -> IncidentResult:
        """Apply a dead letter under its original incident id; applying twice is a no-op.

        Interrupted ticket openings of the tenant are repaired first: a report is queued
        when its group failed part-way, e.g. its ticket and record landed and the vector
        upsert did not, and then its stored record alone does not make it whole."""
        await self._stages.run("reconcile", lambda: self._upkeep.reconcile(letter.tenant, self._embedder))
        try:
            return await self._stages.run(
                "store", lambda: self._incidents.get(letter.tenant, letter.incident_id)
            )
        except NotFound:
            pass
        alerts = self._alerts
        if alerts is not None and resolves(letter.report):
            (settled,) = await self._stages.run(
                "store", lambda: alerts.settle(letter.tenant, [(letter.incident_id, letter.report)])
            )
            if isinstance(settled, BackendUnavailable):
                raise settled
            return settled
        norm = self._normalizer.normalize(letter.report.log, letter.tenant)
        vector = (await self._embed(letter.tenant, [norm.embed_text]))[0]
        entry = InFlight(letter.report, norm, letter.incident_id, vector, None)
        result = await (await self._decider.decide(letter.tenant, [entry]))[0]
        self._classified(letter.tenant, letter.report, result, time.perf_counter())
        return result

    async def lookup(self, tenant: str, incident_id: str) -> IncidentResult:
        """The current outcome of a report, including one still waiting in the dead-letter queue."""
        try:
            return await self._stages.run("store", lambda: self._incidents.get(tenant, incident_id))
        except (NotFound, BackendUnavailable) as exc:
            letter = await self._stages.run("dlq", lambda: self._dead_letters.get(tenant, incident_id))
            if letter is None or letter.done:
                raise exc
            return IncidentResult(incident_id=incident_id, ticket_id=None, status="queued")

    def _classified(
        self, tenant: str, report: IncidentReport, result: IncidentResult, started: float
    ) -> None:
        method = result.match.method if result.match is not None else None
        if method is not None:
            self._metrics.match_methods.labels(method).inc()
        self._metrics.count_incident(result.status, report.service, tenant)
        set_attributes(
            incident_id=result.incident_id,
            ticket_id=result.ticket_id,
            status=result.status,
            similarity=result.similarity,
        )
        log.info(
            "incident.classified",
            tenant=tenant,
            service=report.service,
            incident_id=result.incident_id,
            ticket_id=result.ticket_id,
            status=result.status,
            method=method,
            similarity=result.similarity,
            related=len(result.related_ticket_ids),
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )

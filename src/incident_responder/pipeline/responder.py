"""The incident pipeline end to end: normalize -> embed -> dedup -> (retrieve ->
recommend) -> store. Async at the edge; every blocking stage runs in a worker thread.

The decide-and-write step is serialized per tenant+service, so concurrent identical
reports can never open two tickets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import anyio.to_thread
import structlog
from opentelemetry.trace import Tracer

from incident_responder.errors import BackendUnavailable, NotFound
from incident_responder.ids import new_incident_id, new_ticket_id
from incident_responder.metrics import Metrics
from incident_responder.models import DeadLetter, IncidentReport, IncidentResult, Match, RunbookHit
from incident_responder.observability.tracing import set_attributes, stage_span
from incident_responder.pipeline.analyze import Analyzer
from incident_responder.pipeline.batching import MicroBatcher
from incident_responder.pipeline.matching import MatchDecision
from incident_responder.pipeline.normalize import LogNormalizer, NormalizedLog
from incident_responder.pipeline.runbooks import RunbookCatalog
from incident_responder.pipeline.ticketing import Report, TicketDesk
from incident_responder.ports import DeadLetterQueue, Embedder, LockProvider, Recommender, Vector
from incident_responder.repositories import IncidentRepository

log = structlog.get_logger(__name__)
T = TypeVar("T")
_TITLE_CHARS = 120


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

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
    owner: KeyedLocks
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


class Responder:
    def __init__(
        self,
        *,
        normalizer: LogNormalizer,
        embedder: Embedder,
        analyzer: Analyzer,
        desk: TicketDesk,
        catalog: RunbookCatalog,
        recommender: Recommender,
        incidents: IncidentRepository,
        dead_letters: DeadLetterQueue,
        metrics: Metrics,
        locks: LockProvider | None = None,
        tracer: Tracer | None = None,
        batcher: MicroBatcher | None = None,
    ) -> None:
        self._normalizer = normalizer
        self._embedder = embedder
        self._analyzer = analyzer
        self._desk = desk
        self._catalog = catalog
        self._recommender = recommender
        self._incidents = incidents
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._locks: LockProvider = locks or KeyedLocks()
        self._tracer = tracer
        self._batcher = batcher

    async def _run(self, stage: str, fn: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            with stage_span(self._tracer, stage):
                return await anyio.to_thread.run_sync(fn)
        finally:
            self._metrics.stage_seconds.labels(stage).observe(time.perf_counter() - started)

    async def _embed(self, texts: list[str]) -> Vector:
        if self._batcher is None:
            return await self._run("embed", lambda: self._embedder.embed(texts))
        started = time.perf_counter()
        with stage_span(self._tracer, "embed"):
            try:
                return await self._batcher.embed(texts)
            finally:
                self._metrics.stage_seconds.labels("embed").observe(time.perf_counter() - started)

    async def handle(self, tenant: str, report: IncidentReport) -> IncidentResult:
        return (await self.handle_batch(tenant, [report]))[0]

    async def handle_batch(self, tenant: str, reports: Sequence[IncidentReport]) -> list[IncidentResult]:
        """Process reports in order, with the same outcome as one request each."""
        started = time.perf_counter()
        norms = [self._normalizer.normalize(r.log) for r in reports]
        self._metrics.stage_seconds.labels("normalize").observe(time.perf_counter() - started)
        # Reports whose exact fingerprint is already known skip the model entirely.
        try:
            known = await self._run(
                "fingerprint",
                lambda: [
                    self._analyzer.by_fingerprint(tenant, r.service, n.fingerprint)
                    for r, n in zip(reports, norms, strict=True)
                ],
            )
        except BackendUnavailable:
            known = [None] * len(reports)  # embed everything; each report then queues or not on its own
        texts = sorted({n.embed_text for n, k in zip(norms, known, strict=True) if k is None})
        vectors: dict[str, Vector] = {}
        if texts:
            embedded = await self._embed(texts)
            vectors = {t: embedded[i] for i, t in enumerate(texts)}
        results = []
        for report, norm in zip(reports, norms, strict=True):
            results.append(await self._process_or_queue(tenant, report, norm, vectors.get(norm.embed_text)))
        return results

    async def _process_or_queue(
        self, tenant: str, report: IncidentReport, norm: NormalizedLog, vector: Vector | None
    ) -> IncidentResult:
        incident_id = new_incident_id()
        try:
            return await self._process(tenant, report, norm, vector, incident_id)
        except BackendUnavailable as exc:
            # Accepted but not applicable now: keep it durably and answer 202. If even
            # the dead-letter write fails, this raises and the caller answers 503.
            error = exc.message
            await self._run("dlq", lambda: self._dead_letters.put(tenant, incident_id, report, error))
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
        """Apply a dead letter under its original incident id; applying twice is a no-op."""
        try:
            return await self._run("store", lambda: self._incidents.get(letter.tenant, letter.incident_id))
        except NotFound:
            pass
        await self._run("reconcile", lambda: self._desk.reconcile(letter.tenant, self._embedder))
        norm = self._normalizer.normalize(letter.report.log)
        vector = (await self._run("embed", lambda: self._embedder.embed([norm.embed_text])))[0]
        return await self._process(letter.tenant, letter.report, norm, vector, letter.incident_id)

    async def lookup(self, tenant: str, incident_id: str) -> IncidentResult:
        """The current outcome of a report, including one still waiting in the dead-letter queue."""
        try:
            return await self._run("store", lambda: self._incidents.get(tenant, incident_id))
        except (NotFound, BackendUnavailable) as exc:
            letter = await self._run("dlq", lambda: self._dead_letters.get(tenant, incident_id))
            if letter is None or letter.done:
                raise exc
            return IncidentResult(incident_id=incident_id, ticket_id=None, status="queued")

    async def _process(
        self,
        tenant: str,
        report: IncidentReport,
        norm: NormalizedLog,
        vector: Vector | None,
        incident_id: str,
    ) -> IncidentResult:
        started = time.perf_counter()
        async with self._locks.hold(tenant, report.service):

            def decide() -> MatchDecision | None:
                if (
                    vector is None
                    and self._analyzer.by_fingerprint(tenant, report.service, norm.fingerprint) is None
                ):
                    # Known at the pre-check, gone now (deleted by reconcile): the model is needed after all.
                    return None
                return self._analyzer.decide(tenant, report.service, norm, vector)

            decision = await self._run("search", decide)
            if decision is None:
                vector = (await self._run("embed", lambda: self._embedder.embed([norm.embed_text])))[0]
                decision = await self._run(
                    "search", lambda: self._analyzer.decide(tenant, report.service, norm, vector)
                )
            if decision.ticket_id is not None and decision.method is not None:
                matched = decision
                rep = Report(
                    incident_id, report.log, norm.fingerprint, norm.template, norm.embed_text, vector
                )

                def record() -> IncidentResult:
                    # One worker-thread hop for both writes of a repeat (the hot path of a storm).
                    assert matched.ticket_id is not None and matched.method is not None
                    ticket, regression = self._desk.add_report(tenant, matched.ticket_id, rep)
                    similarity = round(matched.similarity or 0.0, 4)
                    done = IncidentResult(
                        incident_id=incident_id,
                        ticket_id=ticket.ticket_id,
                        status="regression" if regression else "existing",
                        matched_ticket_id=ticket.ticket_id,
                        similarity=similarity,
                        match=Match(method=matched.method, template=matched.template, similarity=similarity),
                        related_ticket_ids=list(matched.related_ticket_ids),
                        runbooks=ticket.runbooks,
                        recommendation=ticket.recommendation,
                    )
                    self._incidents.put(tenant, done)
                    return done

                result = await self._run("store", record)
                self._metrics.match_methods.labels(decision.method).inc()
            else:
                assert vector is not None  # decide() refuses to search without one
                result = await self._open(
                    tenant, report, norm, incident_id, vector, decision.related_ticket_ids
                )
                await self._run("store", lambda: self._incidents.put(tenant, result))
        self._metrics.count_incident(result.status, report.service, tenant)
        set_attributes(
            incident_id=incident_id,
            ticket_id=result.ticket_id,
            status=result.status,
            similarity=result.similarity,
        )
        log.info(
            "incident.classified",
            tenant=tenant,
            service=report.service,
            incident_id=incident_id,
            ticket_id=result.ticket_id,
            status=result.status,
            method=decision.method,
            similarity=result.similarity,
            related=len(result.related_ticket_ids),
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        return result

    async def _open(
        self,
        tenant: str,
        report: IncidentReport,
        norm: NormalizedLog,
        incident_id: str,
        vector: Vector,
        related: Sequence[str],
    ) -> IncidentResult:
        hits: list[RunbookHit] = await self._run("retrieve", lambda: self._catalog.search(tenant, report.log))
        chunks = self._catalog.grounding(tenant, hits)
        titles = {hit.id: hit.title for hit in hits}
        recommendation = await self._run(
            "recommend", lambda: self._recommender.recommend(report.log, chunks, titles)
        )
        title = report.title or _title_from(norm.message or report.log)
        rep = Report(incident_id, report.log, norm.fingerprint, norm.template, norm.embed_text, vector)
        ticket = await self._run(
            "store",
            lambda: self._desk.open_ticket(
                tenant=tenant,
                service=report.service,
                ticket_id=new_ticket_id(),
                title=title,
                severity=report.severity,
                labels=report.labels,
                report=rep,
                runbooks=hits,
                recommendation=recommendation,
            ),
        )
        return IncidentResult(
            incident_id=incident_id,
            ticket_id=ticket.ticket_id,
            status="new",
            related_ticket_ids=list(related),
            runbooks=hits,
            recommendation=recommendation,
        )


def _title_from(text: str) -> str:
    first = next((line.strip() for line in text.splitlines() if line.strip()), "incident")
    return first if len(first) <= _TITLE_CHARS else first[: _TITLE_CHARS - 1] + "…"

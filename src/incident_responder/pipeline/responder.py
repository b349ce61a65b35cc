"""The incident pipeline end to end: normalize -> embed -> dedup -> (retrieve ->
recommend) -> store. Async at the edge; every blocking stage runs in a worker thread.

The decide-and-write step is serialized per tenant+service, so concurrent identical
reports can never open two tickets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import anyio.to_thread
import structlog
from opentelemetry.trace import Tracer

from incident_responder.errors import BackendUnavailable, NotFound
from incident_responder.ids import new_incident_id, new_ticket_id
from incident_responder.metrics import Metrics
from incident_responder.models import DeadLetter, IncidentReport, IncidentResult, RunbookHit
from incident_responder.observability.tracing import set_attributes, stage_span
from incident_responder.pipeline.analyze import Analyzer
from incident_responder.pipeline.batching import MicroBatcher
from incident_responder.pipeline.committing import Repeat, RepeatWriter
from incident_responder.pipeline.matching import MatchDecision
from incident_responder.pipeline.normalize import LogNormalizer, NormalizedLog
from incident_responder.pipeline.retrieve import query_text
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
        group_commit: bool = True,
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
        self._writer = RepeatWriter(desk=desk, incidents=incidents, run=self._run, grouped=group_commit)

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
        """Process reports in order, with the same outcome as one request each.

        Reports whose exact fingerprint is already known skip the model, the search and
        the lock: they go straight to the group-commit writer. The others are decided
        one by one under the tenant+service lock; those that join a ticket are queued to
        the writer too, so every repeat of the batch lands in one group commit.
        """
        started = time.perf_counter()
        norms = [self._normalizer.normalize(r.log) for r in reports]
        self._metrics.stage_seconds.labels("normalize").observe(time.perf_counter() - started)
        known = await self._known_tickets(tenant, reports, norms)
        # Unknown reports may open tickets: their runbook query is embedded in the same model
        # batch as their dedup text (the same text for a plain log line: embedded once).
        runbooks = self._catalog.has_runbooks(tenant)
        texts = sorted(
            {n.embed_text for n, k in zip(norms, known, strict=True) if k is None}
            | {
                query_text(r.log, n.embed_text)
                for r, n, k in zip(reports, norms, known, strict=True)
                if k is None and runbooks
            }
        )
        vectors: dict[str, Vector] = {}
        if texts:
            embedded = await self._embed(texts)
            vectors = {t: embedded[i] for i, t in enumerate(texts)}
        outcomes: list[Awaitable[IncidentResult]] = []
        for report, norm, ticket_id in zip(reports, norms, known, strict=True):
            incident_id = new_incident_id()
            if ticket_id is not None:
                decision = MatchDecision(
                    ticket_id=ticket_id,
                    method="fingerprint",
                    similarity=1.0,
                    template=norm.template,
                    related_ticket_ids=(),
                )
                queued = self._enqueue(tenant, report, norm, None, incident_id, decision)
                outcomes.append(self._finish(tenant, report, norm, None, incident_id, queued, started))
            else:
                outcome = await self._process_or_queue(
                    tenant, report, norm, vectors.get(norm.embed_text), incident_id, started, vectors
                )
                outcomes.append(outcome)
        return list(await asyncio.gather(*outcomes))

    async def _known_tickets(
        self, tenant: str, reports: Sequence[IncidentReport], norms: Sequence[NormalizedLog]
    ) -> list[str | None]:
        """Per report, the ticket already holding its exact fingerprint (None: unknown)."""
        keys = [(r.service, n.fingerprint) for r, n in zip(reports, norms, strict=True)]
        known = [self._analyzer.cached_fingerprint(tenant, service, fp) for service, fp in keys]
        missing = [i for i, k in enumerate(known) if k is None]
        if missing and self._analyzer.fast_path:
            try:
                found = await self._run(
                    "fingerprint",
                    lambda: [self._analyzer.find_fingerprint(tenant, *keys[i]) for i in missing],
                )
            except BackendUnavailable:
                found = [None] * len(missing)  # embed these; each then queues or not on its own
            for i, ticket_id in zip(missing, found, strict=True):
                known[i] = ticket_id
        return known

    def _enqueue(
        self,
        tenant: str,
        report: IncidentReport,
        norm: NormalizedLog,
        vector: Vector | None,
        incident_id: str,
        decision: MatchDecision,
    ) -> asyncio.Future[IncidentResult]:
        assert decision.ticket_id is not None
        rep = Report(incident_id, report.log, norm.fingerprint, norm.template, norm.embed_text, vector)
        return self._writer.enqueue(Repeat(tenant, decision.ticket_id, rep, decision))

    async def _finish(
        self,
        tenant: str,
        report: IncidentReport,
        norm: NormalizedLog,
        vector: Vector | None,
        incident_id: str,
        queued: Awaitable[IncidentResult] | IncidentResult,
        started: float,
    ) -> IncidentResult:
        """Wait for the outcome of a report, queueing it durably if a backend is down."""
        try:
            try:
                result = await _settled(queued)
            except NotFound:
                # Its ticket vanished (undone by reconcile) after the fingerprint was cached:
                # decide again, once (a second NotFound, ticket gone but vectors not, propagates).
                self._analyzer.forget(tenant, report.service, norm.fingerprint)
                if vector is None:
                    vector = (await self._embed([norm.embed_text]))[0]
                result = await _settled(await self._process(tenant, report, norm, vector, incident_id))
        except BackendUnavailable as exc:
            return await self._queue(tenant, report, incident_id, exc)
        self._classified(tenant, report, result, started)
        return result

    async def _process_or_queue(
        self,
        tenant: str,
        report: IncidentReport,
        norm: NormalizedLog,
        vector: Vector | None,
        incident_id: str,
        started: float,
        embedded: Mapping[str, Vector] | None = None,
    ) -> Awaitable[IncidentResult]:
        """Decide ``report`` now (in order); the returned awaitable gives its outcome."""
        try:
            outcome = await self._process(tenant, report, norm, vector, incident_id, embedded)
        except BackendUnavailable as exc:
            return _ready(await self._queue(tenant, report, incident_id, exc))
        return self._finish(tenant, report, norm, vector, incident_id, outcome, started)

    async def _queue(
        self, tenant: str, report: IncidentReport, incident_id: str, exc: BackendUnavailable
    ) -> IncidentResult:
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
        result = await _settled(
            await self._process(letter.tenant, letter.report, norm, vector, letter.incident_id)
        )
        self._classified(letter.tenant, letter.report, result, time.perf_counter())
        return result

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
        embedded: Mapping[str, Vector] | None = None,
    ) -> IncidentResult | asyncio.Future[IncidentResult]:
        """Decide under the tenant+service lock: open a ticket (done, returns the outcome)
        or join one (queued to the writer, returns the future of the outcome)."""
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
                vector = (await self._embed([norm.embed_text]))[0]
                decision = await self._run(
                    "search", lambda: self._analyzer.decide(tenant, report.service, norm, vector)
                )
            if decision.ticket_id is not None and decision.method is not None:
                return self._enqueue(tenant, report, norm, vector, incident_id, decision)
            assert vector is not None  # decide() refuses to search without one
            result = await self._open(
                tenant,
                report,
                norm,
                incident_id,
                vector,
                decision.related_ticket_ids,
                embedded if embedded is not None else {norm.embed_text: vector},
            )
            await self._run("store", lambda: self._incidents.put(tenant, result))
            return result

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

    async def _open(
        self,
        tenant: str,
        report: IncidentReport,
        norm: NormalizedLog,
        incident_id: str,
        vector: Vector,
        related: Sequence[str],
        embedded: Mapping[str, Vector],
    ) -> IncidentResult:
        hits: list[RunbookHit] = await self._run(
            "retrieve",
            lambda: self._catalog.search(tenant, report.log, plain=norm.embed_text, embedded=embedded),
        )
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


async def _ready(result: IncidentResult) -> IncidentResult:
    return result


async def _settled(outcome: Awaitable[IncidentResult] | IncidentResult) -> IncidentResult:
    """The outcome of a decision: already known (a new ticket) or still being written (a repeat)."""
    return outcome if isinstance(outcome, IncidentResult) else await outcome


def _title_from(text: str) -> str:
    first = next((line.strip() for line in text.splitlines() if line.strip()), "incident")
    return first if len(first) <= _TITLE_CHARS else first[: _TITLE_CHARS - 1] + "…"

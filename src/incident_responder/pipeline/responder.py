"""The incident pipeline end to end: normalize -> embed -> dedup -> (retrieve ->
recommend) -> store. Async at the edge; every blocking stage runs in a worker thread.

The decide-and-open step is serialized per tenant+service, so concurrent identical
reports can never open two tickets: a request holds the locks of its services while
it decides its reports and opens its new tickets (one group write), and releases them
once those tickets are searchable.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import anyio.to_thread
import numpy as np
import structlog
from opentelemetry.trace import Tracer

from incident_responder.errors import BackendUnavailable, NotFound
from incident_responder.ids import new_incident_id, new_ticket_id
from incident_responder.metrics import Metrics
from incident_responder.models import (
    DeadLetter,
    IncidentReport,
    IncidentResult,
    Recommendation,
    RunbookChunk,
    RunbookHit,
    Ticket,
)
from incident_responder.observability.tracing import set_attributes, stage_span
from incident_responder.pipeline.analyze import Analyzer, Recent
from incident_responder.pipeline.batching import MicroBatcher
from incident_responder.pipeline.caching import TenantVectors
from incident_responder.pipeline.coalescing import Coalescer
from incident_responder.pipeline.committing import Repeat, RepeatWriter, joined_result
from incident_responder.pipeline.matching import MatchDecision
from incident_responder.pipeline.normalize import LogNormalizer, NormalizedLog
from incident_responder.pipeline.recommendation_cache import RecommendationCache
from incident_responder.pipeline.retrieve import query_text
from incident_responder.pipeline.runbooks import RunbookCatalog
from incident_responder.pipeline.ticketing import Draft, Report, TicketDesk
from incident_responder.ports import (
    DeadLetterQueue,
    Embedder,
    LockProvider,
    ObjectWrite,
    Recommender,
    Vector,
)
from incident_responder.repositories import IncidentRepository

log = structlog.get_logger(__name__)
T = TypeVar("T")
R = TypeVar("R")
# Text work (normalizing, parsing) on requests holding at most this many characters runs on the
# event loop (~0.1 ms); more runs in worker threads in slices of at most _SLICE_CHARS (~10 ms).
_INLINE_CHARS = 2_000
_SLICE_CHARS = 64_000
_TITLE_CHARS = 120
_RECOMMEND_CONCURRENCY = 8
# Reports decided (and new tickets opened) per group: bounds how long a group holds its
# services' locks when every new ticket waits for an LLM's recommendation.
_MAX_GROUP = 64


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
        recommendations: RecommendationCache | None = None,
        vectors: TenantVectors | None = None,
    ) -> None:
        self._normalizer = normalizer
        self._embedder = embedder
        self._analyzer = analyzer
        self._desk = desk
        self._catalog = catalog
        self._recommender = recommender
        self._recommendations = recommendations
        self._vectors = vectors
        self._incidents = incidents
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._locks: LockProvider = locks or KeyedLocks()
        self._tracer = tracer
        self._batcher = batcher
        self._grouped = group_commit
        self._decider: Coalescer[_Entry, Awaitable[IncidentResult]] = Coalescer(self._decide_groups)
        self._writer = RepeatWriter(desk=desk, incidents=incidents, run=self._run, grouped=group_commit)

    async def _run(self, stage: str, fn: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            with stage_span(self._tracer, stage):
                return await anyio.to_thread.run_sync(fn)
        finally:
            self._metrics.stage_seconds.labels(stage).observe(time.perf_counter() - started)

    async def _in_slices(
        self, stage: str, sizes: Sequence[int], work: Callable[[int, int], list[R]]
    ) -> list[R]:
        """``work(0, len(sizes))``: on the event loop when the items are small (a thread hop costs
        more than the work), else in worker threads, one slice of items of at most
        ``_SLICE_CHARS`` characters at a time, so that a large batch never holds the event loop."""
        if sum(sizes) <= _INLINE_CHARS:
            started = time.perf_counter()
            out = work(0, len(sizes))
            self._metrics.stage_seconds.labels(stage).observe(time.perf_counter() - started)
            return out
        results: list[R] = []
        start = 0
        while start < len(sizes):
            end, weight = start, 0
            while end < len(sizes) and (end == start or weight + sizes[end] <= _SLICE_CHARS):
                weight += sizes[end]
                end += 1
            results.extend(await self._run(stage, functools.partial(work, start, end)))
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
            return await self._run("embed", lambda: self._embedder.embed(texts))
        started = time.perf_counter()
        with stage_span(self._tracer, "embed"):
            try:
                return await self._batcher.embed(texts)
            finally:
                self._metrics.stage_seconds.labels("embed").observe(time.perf_counter() - started)

    @staticmethod
    async def _maybe_off_loop(blocking: bool, fn: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(fn) if blocking else fn()

    async def handle(self, tenant: str, report: IncidentReport) -> IncidentResult:
        return (await self.handle_batch(tenant, [report]))[0]

    async def handle_batch(self, tenant: str, reports: Sequence[IncidentReport]) -> list[IncidentResult]:
        """Process reports in order, with the same outcome as one request each.

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
        known = await self._known_tickets(tenant, reports, norms)
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
        texts = sorted({n.embed_text for _, n in unknown} | set(queries))
        vectors: dict[str, Vector] = {}
        if texts:
            embedded = await self._embed(tenant, texts)
            vectors = {t: embedded[i] for i, t in enumerate(texts)}
        entries = [
            _Entry(
                report,
                norm,
                new_incident_id(),
                None if k is not None else vectors[norm.embed_text],
                k,
                vectors,
            )
            for report, norm, k in zip(reports, norms, known, strict=True)
        ]
        decided: list[Awaitable[IncidentResult]]
        if not self._grouped:  # naive mode: one report at a time
            decided = [outcome for e in entries for outcome in await self._decide(tenant, [e])]
        elif all(e.known is not None for e in entries):  # repeats only: straight to the writer
            decided = await self._decide(tenant, entries)
        else:  # decided with the reports of every request that arrives meanwhile
            decided = await self._decider.submit(tenant, entries)
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
        return results

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
                    lambda: self._analyzer.find_fingerprints(tenant, [keys[i] for i in missing]),
                )
            except BackendUnavailable:
                found = {}  # embed these; each then queues or not on its own
            for i in missing:
                known[i] = found.get(keys[i])
        return known

    def _enqueue(self, tenant: str, entry: _Entry, decision: MatchDecision) -> asyncio.Future[IncidentResult]:
        assert decision.ticket_id is not None
        return self._writer.enqueue(Repeat(tenant, decision.ticket_id, entry.as_report(), decision))

    async def _settle(
        self, tenant: str, entry: _Entry, outcome: Awaitable[IncidentResult]
    ) -> IncidentResult | BackendUnavailable:
        """Wait for the outcome of a report: the result, or why a backend could not take it."""
        report = entry.report
        try:
            try:
                return await outcome
            except NotFound:
                # Its ticket vanished (undone by reconcile) after the fingerprint was cached:
                # decide again, once (a second NotFound, ticket gone but vectors not, propagates).
                self._analyzer.forget(tenant, report.service, entry.norm.fingerprint)
                vector = entry.vector
                if vector is None:
                    vector = (await self._embed(tenant, [entry.norm.embed_text]))[0]
                again = _Entry(report, entry.norm, entry.incident_id, vector, None, entry.embedded)
                return await (await self._decide(tenant, [again]))[0]
        except BackendUnavailable as exc:
            return exc

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
        """Apply a dead letter under its original incident id; applying twice is a no-op.

        Interrupted ticket openings of the tenant are repaired first: a report is queued
        when its group failed part-way, e.g. its ticket and record landed and the vector
        upsert did not, and then its stored record alone does not make it whole."""
        await self._run("reconcile", lambda: self._desk.reconcile(letter.tenant, self._embedder))
        try:
            return await self._run("store", lambda: self._incidents.get(letter.tenant, letter.incident_id))
        except NotFound:
            pass
        norm = self._normalizer.normalize(letter.report.log, letter.tenant)
        vector = (await self._embed(letter.tenant, [norm.embed_text]))[0]
        entry = _Entry(letter.report, norm, letter.incident_id, vector, None)
        result = await (await self._decide(letter.tenant, [entry]))[0]
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

    async def _decide_groups(self, tenant: str, entries: list[_Entry]) -> list[Awaitable[IncidentResult]]:
        decided: list[Awaitable[IncidentResult]] = []
        for group in _groups(entries, _MAX_GROUP):
            decided.extend(await self._decide(tenant, group))
        return decided

    async def _decide(self, tenant: str, entries: Sequence[_Entry]) -> list[Awaitable[IncidentResult]]:
        """Decide ``entries`` in order; per entry, the awaitable of its outcome.

        Entries whose fingerprint was known go to the group-commit writer as they are.
        The others are decided together under the locks of their tenant+services (taken
        in one order: no deadlock), each against the index and against the tickets opened
        by the entries before it; the new tickets are then opened as one group
        (``TicketDesk.open_many``) before the locks are released, so the next decision sees
        them. Outcomes fail with ``BackendUnavailable`` if a store is down, ``NotFound``
        if a known ticket vanished; the caller queues or re-decides them.
        """
        unknown = [e for e in entries if e.known is None]
        services = sorted({e.report.service for e in unknown})
        async with AsyncExitStack() as held:
            plan, failure = _Plan(), None
            try:
                for service in services:
                    await held.enter_async_context(self._locks.hold(tenant, service))
                if unknown:
                    plan = await self._run("search", lambda: self._plan(tenant, unknown))
            except BackendUnavailable as exc:  # a lock or the index: these wait in the queue
                failure = exc
            outcomes: list[Awaitable[IncidentResult]] = []
            opened: dict[str, asyncio.Future[IncidentResult]] = {}
            loop = asyncio.get_running_loop()
            for entry in entries:  # repeats are queued in request order: the first one reopens
                if failure is not None and entry.known is None:
                    outcomes.append(_failed(failure))
                    continue
                decision = (
                    _fingerprint_match(entry)
                    if entry.known is not None
                    else plan.decisions[entry.incident_id]
                )
                if decision.ticket_id is not None and decision.ticket_id not in plan.drafts:
                    outcomes.append(self._enqueue(tenant, entry, decision))
                else:
                    opened[entry.incident_id] = loop.create_future()
                    outcomes.append(opened[entry.incident_id])
            if opened:
                try:
                    results = await self._open(tenant, plan)
                except BackendUnavailable as exc:
                    for future in opened.values():
                        future.set_exception(exc)
                else:
                    for incident_id, future in opened.items():
                        future.set_result(results[incident_id])
        return outcomes

    def _plan(self, tenant: str, unknown: Sequence[_Entry]) -> _Plan:
        """Decide each entry in order (blocking: searches the index)."""
        plan = _Plan()
        recent: dict[str, list[Recent]] = {}
        # Under the locks: one index query per service, not one per report.
        indexed = self._analyzer.find_fingerprints(
            tenant, [(e.report.service, e.norm.fingerprint) for e in unknown]
        )
        for entry in unknown:
            service = entry.report.service
            assert entry.vector is not None  # an unknown fingerprint is always embedded
            decision = self._analyzer.decide(
                tenant, service, entry.norm, entry.vector, recent.get(service, ()), indexed=indexed
            )
            if decision.ticket_id is None:
                report = entry.report
                draft = Draft(
                    service=service,
                    ticket_id=new_ticket_id(),
                    title=report.title or _title_from(entry.norm.message or report.log),
                    severity=report.severity,
                    labels=report.labels,
                    reports=[],
                )
                plan.drafts[draft.ticket_id] = (draft, entry, decision)
                decision = MatchDecision(
                    draft.ticket_id, None, None, decision.template, decision.related_ticket_ids
                )
            plan.decisions[entry.incident_id] = decision
            opening = plan.drafts.get(decision.ticket_id or "")
            if opening is not None:
                draft = opening[0]
                if all(r.fingerprint != entry.norm.fingerprint for r in draft.reports):
                    recent.setdefault(service, []).append(
                        Recent(draft.ticket_id, entry.norm.fingerprint, entry.norm.template, entry.vector)
                    )
                draft.reports.append(entry.as_report())
        return plan

    async def _open(self, tenant: str, plan: _Plan) -> dict[str, IncidentResult]:
        """Ground, recommend and open every new ticket of ``plan`` as one group; per
        incident id of their reports, the outcome (stored before this returns)."""
        firsts = [(draft, entry) for draft, entry, _ in plan.drafts.values()]

        def retrieve() -> list[tuple[list[RunbookHit], list[RunbookChunk], dict[str, str]]]:
            out = []
            for _, e in firsts:
                assert e.vector is not None
                vectors = e.embedded if e.norm.embed_text in e.embedded else {e.norm.embed_text: e.vector}
                hits = self._catalog.search(tenant, e.report.log, plain=e.norm.embed_text, embedded=vectors)
                out.append((hits, self._catalog.grounding(tenant, hits), {h.id: h.title for h in hits}))
            return out

        grounded = await self._run("retrieve", retrieve)
        asks = [(e, chunks, titles) for (_, e), (_, chunks, titles) in zip(firsts, grounded, strict=True)]
        recommendations = await self._recommend(tenant, asks)
        for (draft, _), (hits, _, _), recommendation in zip(firsts, grounded, recommendations, strict=True):
            draft.runbooks, draft.recommendation = hits, recommendation
        drafts = [draft for draft, _ in firsts]
        results: dict[str, IncidentResult] = {}

        def records(ticket: Ticket) -> list[ObjectWrite]:
            # Stored with the ticket, in its group commit (one journal flush for both).
            draft, entry, decision = plan.drafts[ticket.ticket_id]
            mine = [
                IncidentResult(
                    incident_id=entry.incident_id,
                    ticket_id=ticket.ticket_id,
                    status="new",
                    related_ticket_ids=list(decision.related_ticket_ids),
                    runbooks=draft.runbooks,
                    recommendation=draft.recommendation,
                )
            ]
            mine += [
                joined_result(r.incident_id, ticket, plan.decisions[r.incident_id], regression=False)
                for r in draft.reports[1:]
            ]
            results.update((r.incident_id, r) for r in mine)
            return self._incidents.writes(tenant, mine)

        await self._run("store", lambda: self._desk.open_many(tenant, drafts, records=records))
        return results

    async def _recommend(
        self, tenant: str, asks: Sequence[tuple[_Entry, list[RunbookChunk], dict[str, str]]]
    ) -> list[Recommendation | None]:
        """One recommendation per new ticket: reused from a near-identical earlier incident of
        the same runbook context where the cache has one, else asked for. A remote recommender
        (an LLM) is asked concurrently; an in-process one in one worker-thread hop."""
        cache = self._recommendations
        out: list[Recommendation | None] = [
            None if cache is None or e.vector is None else cache.get(tenant, chunks, titles, e.vector)
            for e, chunks, titles in asks
        ]
        todo = [i for i, found in enumerate(out) if found is None]
        if not todo:
            return out
        recommender = self._recommender

        def ask(i: int) -> Recommendation | None:
            e, chunks, titles = asks[i]
            return recommender.recommend(e.report.log, chunks, titles)

        if recommender.remote:
            gate = asyncio.Semaphore(_RECOMMEND_CONCURRENCY)  # a remote LLM answers several at once

            async def one(i: int) -> Recommendation | None:
                async with gate:
                    return await self._run("recommend", lambda: ask(i))

            answers = await asyncio.gather(*(one(i) for i in todo))
        else:
            answers = await self._run("recommend", lambda: [ask(i) for i in todo])
        for i, answer in zip(todo, answers, strict=True):
            out[i] = answer
            e, chunks, titles = asks[i]
            # A fallback's answer (the LLM failed) is not kept: the LLM's is wanted once it is back.
            if cache is None or answer is None or e.vector is None or answer.source != recommender.name:
                continue
            cache.put(tenant, chunks, titles, e.vector, answer)
        return out

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


@dataclass(frozen=True)
class _Entry:
    """One report of a request on its way through :meth:`Responder._decide`."""

    report: IncidentReport
    norm: NormalizedLog
    incident_id: str
    vector: Vector | None  # None only when its fingerprint was known
    known: str | None  # the ticket holding its fingerprint, if known before deciding
    embedded: Mapping[str, Vector] = field(default_factory=dict)  # its request's vectors, by text

    def as_report(self) -> Report:
        n = self.norm
        return Report(self.incident_id, self.report.log, n.fingerprint, n.template, n.embed_text, self.vector)


@dataclass
class _Plan:
    """The decisions of one group: per incident id its decision (a new ticket's id for the
    reports that open or join one), and the new tickets with what opened each."""

    decisions: dict[str, MatchDecision] = field(default_factory=dict)
    drafts: dict[str, tuple[Draft, _Entry, MatchDecision]] = field(default_factory=dict)


def _groups(entries: Sequence[_Entry], size: int) -> Iterator[list[_Entry]]:
    """Consecutive runs of ``entries`` with at most ``size`` unknown fingerprints each."""
    group: list[_Entry] = []
    unknown = 0
    for entry in entries:
        if entry.known is None:
            if unknown == size:
                yield group
                group, unknown = [], 0
            unknown += 1
        group.append(entry)
    if group:
        yield group


def _fingerprint_match(entry: _Entry) -> MatchDecision:
    return MatchDecision(
        ticket_id=entry.known,
        method="fingerprint",
        similarity=1.0,
        template=entry.norm.template,
        related_ticket_ids=(),
    )


async def _failed(exc: Exception) -> IncidentResult:
    raise exc


def _title_from(text: str) -> str:
    first = next((line.strip() for line in text.splitlines() if line.strip()), "incident")
    return first if len(first) <= _TITLE_CHARS else first[: _TITLE_CHARS - 1] + "…"

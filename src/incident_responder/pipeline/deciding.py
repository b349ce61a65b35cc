"""Deciding reports into tickets, under the locks of their tenant+services, one group at a time.

A group's reports with unknown fingerprints are decided in order against the index and
against the tickets opened earlier in the same group; the new tickets they need are then
grounded (runbooks), recommended and opened as one group write before the locks are
released, so that the next group sees them. Reports that join an existing ticket go to the
group-commit writer (:class:`~incident_responder.pipeline.committing.RepeatWriter`). So
concurrent identical reports can never open two tickets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from incident_responder.errors import BackendUnavailable
from incident_responder.ids import new_ticket_id
from incident_responder.models import (
    IncidentReport,
    IncidentResult,
    Recommendation,
    RunbookChunk,
    RunbookHit,
    Ticket,
)
from incident_responder.pipeline.committing import Repeat, RepeatWriter, joined_result
from incident_responder.pipeline.dedup import Deduplicator, FingerprintLookup, Recent
from incident_responder.pipeline.late_recommendations import Ask, LateRecommendations
from incident_responder.pipeline.matching import MatchDecision
from incident_responder.pipeline.normalize import NormalizedLog
from incident_responder.pipeline.occurrence import Occurrence
from incident_responder.pipeline.recommendation_cache import RecommendationCache
from incident_responder.pipeline.runbooks import RunbookCatalog
from incident_responder.pipeline.stages import StageRunner
from incident_responder.pipeline.ticketing import Draft, TicketDesk
from incident_responder.ports import LockProvider, ObjectWrite, Recommender, Vector
from incident_responder.repositories import IncidentRepository

TITLE_CHARS = 120  # of a new ticket's title, taken from its first report
RECOMMEND_CONCURRENCY = 8  # questions in flight to a remote recommender (an LLM)
# Reports decided (and new tickets opened) per group: bounds how long a group holds its
# services' locks when every new ticket waits for an LLM's recommendation.
MAX_GROUP = 64


class Decider:
    """Decides reports into tickets under their tenant+service locks, opens the new tickets
    (runbooks, recommendation, one group write) and queues the others to the writer."""

    def __init__(
        self,
        *,
        dedup: Deduplicator,
        fingerprints: FingerprintLookup | None,
        desk: TicketDesk,
        catalog: RunbookCatalog,
        recommender: Recommender,
        incidents: IncidentRepository,
        locks: LockProvider,
        writer: RepeatWriter,
        stages: StageRunner,
        recommendations: RecommendationCache | None = None,
        max_group: int = MAX_GROUP,
        later: LateRecommendations | None = None,
    ) -> None:
        """``recommender`` answers each new ticket before it opens; with ``later``, a remote
        recommender (an LLM) is asked after it opened, and ``recommender`` is the in-process
        one whose answer the ticket has meanwhile."""
        self._dedup = dedup
        self._fingerprints = fingerprints
        self._desk = desk
        self._catalog = catalog
        self._recommender = recommender
        self._incidents = incidents
        self._locks = locks
        self._writer = writer
        self._stages = stages
        self._recommendations = recommendations
        self._max_group = max_group
        self._later = later

    async def decide_groups(self, tenant: str, entries: list[InFlight]) -> list[Awaitable[IncidentResult]]:
        """:meth:`decide` in consecutive groups of at most ``max_group`` unknown fingerprints."""
        decided: list[Awaitable[IncidentResult]] = []
        for group in _groups(entries, self._max_group):
            decided.extend(await self.decide(tenant, group))
        return decided

    def _enqueue(
        self, tenant: str, entry: InFlight, decision: MatchDecision
    ) -> asyncio.Future[IncidentResult]:
        assert decision.ticket_id is not None
        return self._writer.enqueue(Repeat(tenant, decision.ticket_id, entry.occurrence(decision), decision))

    async def decide(self, tenant: str, entries: Sequence[InFlight]) -> list[Awaitable[IncidentResult]]:
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
                    plan = await self._stages.run("search", lambda: self._plan(tenant, unknown))
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

    def _plan(self, tenant: str, unknown: Sequence[InFlight]) -> _Plan:
        """Decide each entry in order (blocking: searches the index)."""
        plan = _Plan()
        recent: dict[str, list[Recent]] = {}
        # Under the locks: one index query per service, not one per report.
        keys = [(e.report.service, e.norm.fingerprint) for e in unknown]
        indexed = self._fingerprints.find_many(tenant, keys) if self._fingerprints is not None else {}
        for entry in unknown:
            service = entry.report.service
            assert entry.vector is not None  # an unknown fingerprint is always embedded
            decision = self._dedup.decide(
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
                    draft.ticket_id,
                    None,
                    None,
                    decision.template,
                    decision.related_ticket_ids,
                    report_template=entry.norm.template,
                )
            plan.decisions[entry.incident_id] = decision
            opening = plan.drafts.get(decision.ticket_id or "")
            if opening is not None:
                draft = opening[0]
                if all(r.fingerprint != entry.norm.fingerprint for r in draft.reports):
                    recent.setdefault(service, []).append(
                        Recent(draft.ticket_id, entry.norm.fingerprint, entry.norm.template, entry.vector)
                    )
                draft.reports.append(entry.occurrence(decision))
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

        grounded = await self._stages.run("retrieve", retrieve)
        asks = [(e, chunks, titles) for (_, e), (_, chunks, titles) in zip(firsts, grounded, strict=True)]
        recommendations = await self._recommend(tenant, asks)
        later = self._later
        pending: dict[str, Ask] = {}
        for (draft, e), (hits, _, _), recommendation in zip(firsts, grounded, recommendations, strict=True):
            draft.runbooks, draft.recommendation = hits, recommendation
            if later is not None and (recommendation is None or recommendation.source != later.name):
                draft.recommendation_pending = True
                pending[draft.ticket_id] = Ask(tenant, draft.ticket_id, e.report.log, e.vector)
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
                    fingerprint=entry.norm.fingerprint,
                    related_ticket_ids=list(decision.related_ticket_ids),
                    runbooks=draft.runbooks,
                    recommendation=draft.recommendation,
                    silenced=entry.silenced,
                )
            ]
            mine += [
                joined_result(
                    r.incident_id,
                    ticket,
                    plan.decisions[r.incident_id],
                    fingerprint=r.fingerprint,
                    regression=False,
                    silenced=r.silenced,
                )
                for r in draft.reports[1:]
            ]
            results.update((r.incident_id, r) for r in mine)
            ask = pending.get(ticket.ticket_id)
            writes = self._incidents.writes(tenant, mine)
            return writes if ask is None or later is None else writes + later.writes(ask)

        await self._stages.run("store", lambda: self._desk.open_many(tenant, drafts, records=records))
        if later is not None:
            later.submit(list(pending.values()))
        return results

    async def _recommend(
        self, tenant: str, asks: Sequence[tuple[InFlight, list[RunbookChunk], dict[str, str]]]
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
            gate = asyncio.Semaphore(RECOMMEND_CONCURRENCY)  # a remote LLM answers several at once

            async def one(i: int) -> Recommendation | None:
                async with gate:
                    return await self._stages.run("recommend", lambda: ask(i))

            answers = await asyncio.gather(*(one(i) for i in todo))
        else:
            answers = await self._stages.run("recommend", lambda: [ask(i) for i in todo])
        for i, answer in zip(todo, answers, strict=True):
            out[i] = answer
            e, chunks, titles = asks[i]
            # A fallback's answer (the LLM failed) is not kept: the LLM's is wanted once it is back;
            # nor is the stand-in of an LLM asked later (that one keeps its own answers).
            if cache is None or answer is None or e.vector is None or answer.source != recommender.name:
                continue
            if self._later is not None:
                continue
            cache.put(tenant, chunks, titles, e.vector, answer)
        return out


@dataclass(frozen=True)
class InFlight:
    """One report of a request on its way to a ticket: as it arrived, normalized, its id,
    its vector, and the ticket already holding its exact fingerprint if that is known."""

    report: IncidentReport
    norm: NormalizedLog
    incident_id: str
    vector: Vector | None  # None only when its fingerprint was known
    known: str | None  # the ticket holding its fingerprint (or its source alert), if known
    embedded: Mapping[str, Vector] = field(default_factory=dict)  # its request's vectors, by text
    silenced: bool = False  # an active silence matches it
    via_alert: bool = False  # ``known`` is the ticket its source alert joined before

    def occurrence(self, decision: MatchDecision | None = None) -> Occurrence:
        """The report as its ticket records it, with why it joined (``decision``; None or no
        method: it opened the ticket)."""
        n = self.norm
        return Occurrence(
            self.incident_id,
            self.report.log,
            n.fingerprint,
            n.template,
            n.embed_text,
            self.vector,
            self.report.alert,
            self.silenced,
            why=_why(decision, n),
            service=self.report.service,
        )


@dataclass
class _Plan:
    """The decisions of one group: per incident id its decision (a new ticket's id for the
    reports that open or join one), and the new tickets with what opened each."""

    decisions: dict[str, MatchDecision] = field(default_factory=dict)
    drafts: dict[str, tuple[Draft, InFlight, MatchDecision]] = field(default_factory=dict)


def _groups(entries: Sequence[InFlight], size: int) -> Iterator[list[InFlight]]:
    """Consecutive runs of ``entries`` with at most ``size`` unknown fingerprints each."""
    group: list[InFlight] = []
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


def _fingerprint_match(entry: InFlight) -> MatchDecision:
    return MatchDecision(
        ticket_id=entry.known,
        method="alert" if entry.via_alert else "fingerprint",
        similarity=1.0,
        template=entry.norm.template,
        related_ticket_ids=(),
        threshold=1.0,
        report_template=entry.norm.template,
    )


def _why(decision: MatchDecision | None, norm: NormalizedLog) -> tuple[str, str]:
    """The way a report joined its ticket (one key per distinct way) and its line of why."""
    if decision is None or decision.method is None:
        return "opened", f"opened by: {norm.template[:160]}"
    if decision.method in ("fingerprint", "alert"):
        return decision.method, decision.why()
    return f"{decision.method}:{norm.fingerprint}", decision.why()


async def _failed(exc: Exception) -> IncidentResult:
    raise exc


def _title_from(text: str) -> str:
    first = next((line.strip() for line in text.splitlines() if line.strip()), "incident")
    return first if len(first) <= TITLE_CHARS else first[: TITLE_CHARS - 1] + "…"

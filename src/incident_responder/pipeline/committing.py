"""Group commit of repeats: reports that join existing tickets are written together.

A storm is mostly repeats, and a repeat costs two durable writes (its ticket, its
incident record). The writer queues repeats and commits everything queued as one
group: one compare-and-swap write per ticket however many of its reports arrived, each
followed by its reports' incident records, all in one ``put_many`` (one pair of journal
flushes on local disk). A record is written ``after`` its ticket: it lands only if the
ticket's write does, and never without it, so a stored record always means its ticket
counts it (what a dead-letter replay relies on).
A group starts as soon as the previous one is done, so an idle server writes at once
and a busy one writes bigger groups; nobody waits for a timer. Every caller is
answered only after its group is durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from incident_responder.errors import NotFound
from incident_responder.models import IncidentResult, Match, Ticket
from incident_responder.pipeline.matching import MatchDecision
from incident_responder.pipeline.occurrence import Occurrence
from incident_responder.pipeline.stages import StageRunner
from incident_responder.pipeline.ticketing import Attached, TicketDesk
from incident_responder.ports import ObjectWrite
from incident_responder.repositories import IncidentRepository


@dataclass(frozen=True)
class Repeat:
    """A report already matched to a ticket, waiting to be written."""

    tenant: str
    ticket_id: str
    report: Occurrence
    decision: MatchDecision


class RepeatWriter:
    """Writes the reports that join existing tickets, everything queued meanwhile as one group
    commit of at most ``max_group`` reports (1: each report alone, the naive server)."""

    def __init__(
        self,
        *,
        desk: TicketDesk,
        incidents: IncidentRepository,
        stages: StageRunner,
        max_group: int = 2_000,
    ) -> None:
        self._desk = desk
        self._incidents = incidents
        self._stages = stages
        self._max_group = max_group
        self._queue: list[tuple[Repeat, asyncio.Future[IncidentResult]]] = []
        self._drainer: asyncio.Task[None] | None = None

    def enqueue(self, repeat: Repeat) -> asyncio.Future[IncidentResult]:
        """Queue ``repeat``; the future resolves once it is durable (or fails with why not).
        Repeats of one ticket are applied in the order they were queued."""
        future: asyncio.Future[IncidentResult] = asyncio.get_running_loop().create_future()
        self._queue.append((repeat, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return future

    async def _drain(self) -> None:
        size = self._max_group
        while self._queue:
            group, self._queue = self._queue[:size], self._queue[size:]
            repeats = [r for r, _ in group]
            try:
                outcomes = await self._stages.run("store", partial(self.commit, repeats))
            except Exception as exc:  # every waiter gets the failure
                outcomes = [exc] * len(group)
            for (_, future), outcome in zip(group, outcomes, strict=True):
                if future.done():  # its request was cancelled; the write stands
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    def commit(self, repeats: Sequence[Repeat]) -> list[IncidentResult | Exception]:
        """Write ``repeats`` now (blocking): per repeat its outcome, or the error that stopped
        it (``NotFound``: its ticket is gone; ``BackendError``: a store failed)."""
        out: dict[int, IncidentResult | Exception] = {}
        by_tenant: dict[str, list[int]] = {}
        for i, repeat in enumerate(repeats):
            by_tenant.setdefault(repeat.tenant, []).append(i)
        for tenant, positions in by_tenant.items():
            try:
                outcomes = self._commit_tenant(tenant, [repeats[i] for i in positions])
            except Exception as exc:  # one tenant's failure stays its own
                outcomes = [exc] * len(positions)
            out.update(zip(positions, outcomes, strict=True))
        return [out[i] for i in range(len(repeats))]

    def _commit_tenant(self, tenant: str, repeats: Sequence[Repeat]) -> list[IncidentResult | Exception]:
        by_ticket: dict[str, list[Repeat]] = {}
        for repeat in repeats:
            by_ticket.setdefault(repeat.ticket_id, []).append(repeat)
        outcomes: dict[str, list[IncidentResult]] = {}  # per ticket, its repeats' in order

        def records(ticket_id: str, attached: Attached) -> list[ObjectWrite]:
            # The records land with their ticket, in its group commit (one journal flush for both).
            group = by_ticket[ticket_id]
            outcomes[ticket_id] = [_result(r, attached, n) for n, r in enumerate(group)]
            return self._incidents.writes(tenant, outcomes[ticket_id])

        attached = self._desk.attach(
            tenant, {t: [r.report for r in group] for t, group in by_ticket.items()}, records=records
        )
        seen: dict[str, int] = {}
        results: list[IncidentResult | Exception] = []
        for repeat in repeats:
            outcome = attached[repeat.ticket_id]
            if isinstance(outcome, NotFound):
                results.append(outcome)
                continue
            nth = seen.get(repeat.ticket_id, 0)
            seen[repeat.ticket_id] = nth + 1
            results.append(outcomes[repeat.ticket_id][nth])
        return results


def _result(repeat: Repeat, attached: Attached, nth: int) -> IncidentResult:
    return joined_result(
        repeat.report.incident_id,
        attached.ticket,
        repeat.decision,
        fingerprint=repeat.report.fingerprint,
        regression=attached.regressions[nth],
        flapping=bool(attached.flapping) and attached.flapping[nth],
        silenced=repeat.report.silenced,
    )


def joined_result(
    incident_id: str,
    ticket: Ticket,
    decision: MatchDecision,
    *,
    fingerprint: str | None = None,
    regression: bool,
    flapping: bool = False,
    silenced: bool = False,
) -> IncidentResult:
    """The outcome of a report that joined ``ticket``, with the evidence it joined by."""
    similarity = round(decision.similarity or 0.0, 4)
    method = decision.method or "fingerprint"
    match = Match(
        method=method,
        template=decision.template,
        similarity=similarity,
        threshold=decision.threshold,
        report_template=decision.report_template or None,
        differing_tokens=list(decision.differing),
    )
    return IncidentResult(
        incident_id=incident_id,
        ticket_id=ticket.ticket_id,
        status="regression" if regression else "existing",
        fingerprint=fingerprint,
        matched_ticket_id=ticket.ticket_id,
        similarity=similarity,
        match=match,
        related_ticket_ids=list(decision.related_ticket_ids),
        runbooks=ticket.runbooks,
        recommendation=ticket.recommendation,
        silenced=silenced,
        flapping=flapping,
    )

"""Recommendations that arrive after their ticket opened: an LLM's, asked off the intake path.

With an LLM configured, a new ticket opens at once with its runbooks and the offline
recommendation, and a durable ask is written in its group commit
(``<tenant>/asks/<ticket_id>.json``: the first report's log). This queue asks the LLM
(concurrently, ``concurrency`` at a time), replaces the ticket's recommendation with the
answer (``recommendation.source`` names the LLM; when the LLM fails the offline one stays),
clears ``recommendation_pending``, removes the ask and tells the event pump, whose message
about the new ticket waits for this up to the tenant's ``recommendation_wait``. Asks left
by a stop or a crash are resumed at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from incident_responder.errors import NotFound
from incident_responder.models import Recommendation, RunbookChunk
from incident_responder.pipeline.recommendation_cache import RecommendationCache
from incident_responder.pipeline.runbooks import RunbookCatalog
from incident_responder.pipeline.stages import StageRunner
from incident_responder.pipeline.ticketing import TicketDesk
from incident_responder.ports import ObjectStore, ObjectWrite, Recommender, Vector
from incident_responder.repositories import TicketRepository

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Ask:
    """A ticket whose recommendation is still to come, and what to ask about it."""

    tenant: str
    ticket_id: str
    log: str
    vector: Vector | None = None  # its first report's (to share the answer with similar tickets)


class LateRecommendations:
    """Asks a (remote) recommender for new tickets' recommendations in the background."""

    def __init__(
        self,
        *,
        recommender: Recommender,
        objects: ObjectStore,
        tickets: TicketRepository,
        desk: TicketDesk,
        catalog: RunbookCatalog,
        stages: StageRunner,
        cache: RecommendationCache | None = None,
        on_answer: Callable[[str], None] = lambda _tenant: None,
        concurrency: int = 8,
    ) -> None:
        self._recommender = recommender
        self._objects = objects
        self._tickets = tickets
        self._desk = desk
        self._catalog = catalog
        self._stages = stages
        self._cache = cache
        self._on_answer = on_answer
        self._concurrency = concurrency
        self._queue: asyncio.Queue[Ask] | None = None
        self._workers: list[asyncio.Task[None]] = []

    @property
    def name(self) -> str:
        """The recommender's name, as its answers' ``source``."""
        return self._recommender.name

    @staticmethod
    def _key(tenant: str, ticket_id: str) -> str:
        return f"{tenant}/asks/{ticket_id}.json"

    def writes(self, ask: Ask) -> list[ObjectWrite]:
        """The durable ask, for the group commit that opens its ticket."""
        return [ObjectWrite(self._key(ask.tenant, ask.ticket_id), json.dumps({"log": ask.log}).encode())]

    def submit(self, asks: Sequence[Ask]) -> None:
        """Queue ``asks`` (their tickets are written); call from the event loop."""
        if not asks:
            return
        queue = self._ensure_workers()
        for ask in asks:
            queue.put_nowait(ask)

    def pending(self, tenants: Sequence[str]) -> list[Ask]:
        """The durable asks of ``tenants``, left by an earlier run (blocking): ``submit`` them."""
        out = []
        for tenant in tenants:
            for key in self._objects.list_keys(f"{tenant}/asks/"):
                found = self._objects.get(key)
                if found is not None:
                    ticket_id = key.rsplit("/", 1)[1].removesuffix(".json")
                    out.append(Ask(tenant, ticket_id, str(json.loads(found.data)["log"])))
        return out

    def _ensure_workers(self) -> asyncio.Queue[Ask]:
        if self._queue is None:
            self._queue = asyncio.Queue()
        self._workers = [w for w in self._workers if not w.done()]
        while len(self._workers) < self._concurrency:
            self._workers.append(asyncio.create_task(self._work(self._queue)))
        return self._queue

    async def _work(self, queue: asyncio.Queue[Ask]) -> None:
        while True:
            ask = await queue.get()
            try:
                await self._answer(ask)
            except Exception:  # the ask stays stored: a later start-up resumes it
                log.exception("recommend.late_failed", tenant=ask.tenant, ticket_id=ask.ticket_id)
            finally:
                queue.task_done()

    async def _answer(self, ask: Ask) -> None:
        try:
            ticket, _ = await self._stages.run("store", lambda: self._tickets.get(ask.tenant, ask.ticket_id))
        except NotFound:  # undone by reconcile: nothing to recommend for
            await self._stages.run(
                "store", lambda: self._objects.delete(self._key(ask.tenant, ask.ticket_id))
            )
            return
        hits = ticket.runbooks
        titles = {h.id: h.title for h in hits}
        chunks: list[RunbookChunk] = self._catalog.grounding(ask.tenant, hits)
        answer: Recommendation | None = None
        cache = self._cache
        if cache is not None and ask.vector is not None:
            answer = cache.get(ask.tenant, chunks, titles, ask.vector)
        if answer is None:
            answer = await self._stages.run(
                "recommend", lambda: self._recommender.recommend(ask.log, chunks, titles)
            )
            kept = answer is not None and answer.source == self._recommender.name  # not a fallback's
            if cache is not None and ask.vector is not None and answer is not None and kept:
                cache.put(ask.tenant, chunks, titles, ask.vector, answer)
        if answer is not None and answer.source != self._recommender.name:
            answer = None  # the LLM failed and the fallback answered: the ticket has that already
        await self._stages.run(
            "store", lambda: self._desk.set_recommendation(ask.tenant, ask.ticket_id, answer)
        )
        await self._stages.run("store", lambda: self._objects.delete(self._key(ask.tenant, ask.ticket_id)))
        self._on_answer(ask.tenant)
        log.info(
            "recommend.late_answer",
            tenant=ask.tenant,
            ticket_id=ask.ticket_id,
            source=answer.source if answer is not None else None,
        )

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._workers = []

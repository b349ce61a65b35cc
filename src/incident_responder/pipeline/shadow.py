"""Shadow grouping: a candidate normalizer table and threshold set decide beside the live ones,
on live traffic, without writing anything, and record where they disagree.

After each request the live decisions are handed over (:meth:`Shadow.observe`, never
blocking: a bounded queue, dropped and counted when full). A background task decides each
report again with the candidate normalizer and thresholds against the shadow's own memory of
the forms it has seen (per tenant+service, bounded, in this process): an exact fingerprint
first, else :func:`~incident_responder.pipeline.matching.choose_match` over the nearest
remembered forms, as the live dedup does. Each shadow ticket stands for the live ticket its
first report went to, so the two decisions compare: the same live ticket (or both new) is an
agreement; otherwise a disagreement, kept with both explanations. A report that joined a live
ticket the shadow never saw (opened before it started) is a warm-up, not a disagreement.

The memory starts empty at start-up and is per process: with several replicas each compares
its own share of the traffic. ``incident-responder shadow promote`` makes the candidate live.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import structlog

from incident_responder.lru import LruCache
from incident_responder.models import IncidentResult
from incident_responder.pipeline.matching import Candidate, MatchDecision, MatchThresholds, choose_match
from incident_responder.pipeline.normalize import LogNormalizer
from incident_responder.ports import Embedder, Vector

log = structlog.get_logger(__name__)

Verdict = Literal["agree", "disagree", "warming_up", "dropped"]
# a live decision: (service, log, live embed text, live vector, result)
Observed = tuple[str, str, str, Vector | None, IncidentResult]
VERDICTS: tuple[Verdict, ...] = ("agree", "disagree", "warming_up", "dropped")
NEW = "new"
KEPT_DISAGREEMENTS = 100  # per tenant, newest
FORMS_PER_SERVICE = 500  # forms the shadow remembers per tenant+service (oldest forgotten)
SERVICES_REMEMBERED = 2_000  # tenant+service memories (least recently used forgotten)


@dataclass
class _Form:
    fingerprint: str
    template: str
    vector: Vector
    ticket: str  # the live ticket the shadow ticket of this form stands for


@dataclass
class _Memory:
    """What the shadow remembers of one tenant+service: forms, newest last."""

    forms: dict[str, _Form] = field(default_factory=dict)  # by fingerprint, oldest first

    def add(self, form: _Form) -> None:
        self.forms[form.fingerprint] = form
        if len(self.forms) > FORMS_PER_SERVICE:
            del self.forms[next(iter(self.forms))]

    def stands_for(self, ticket: str) -> bool:
        """Whether a remembered shadow ticket stands for the live ``ticket``."""
        return any(f.ticket == ticket for f in self.forms.values())


@dataclass
class _Tally:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VERDICTS, 0))
    disagreements: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=KEPT_DISAGREEMENTS))


@dataclass(frozen=True)
class _Job:
    tenant: str
    service: str
    log: str
    live_embed_text: str
    live_vector: Vector | None
    result: IncidentResult


class Shadow:
    """Runs the candidate grouping beside the live one (see the module doc)."""

    def __init__(
        self,
        *,
        normalizer: LogNormalizer,
        version: str,
        thresholds: MatchThresholds,
        embedder: Embedder,
        search_limit: int,
        sample: float = 1.0,
        queue_size: int = 1_000,
        on_verdict: Callable[[Verdict], None] = lambda _verdict: None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self._normalizer = normalizer
        self._version = version
        self._thresholds = thresholds
        self._embedder = embedder
        self._search_limit = search_limit
        self._sample = sample
        self._queue: asyncio.Queue[_Job] | None = None
        self._queue_size = queue_size
        self._task: asyncio.Task[None] | None = None
        self._on_verdict = on_verdict
        self._memory: LruCache[tuple[str, str], _Memory] = LruCache(SERVICES_REMEMBERED)
        self._tallies: dict[str, _Tally] = {}
        self._config = settings or {}

    # ------------------------------------------------------------------ intake
    def observe(
        self, tenant: str, reports: Sequence[tuple[str, str, str, Vector | None, IncidentResult]]
    ) -> None:
        """Hand over live decisions: (service, log, live embed text, live vector, result) each.
        Never blocks; what does not fit in the queue is dropped (and counted)."""
        if self._task is None:
            self._queue = asyncio.Queue(self._queue_size)
            self._task = asyncio.get_running_loop().create_task(self._run())
        assert self._queue is not None
        for service, text, embed_text, vector, result in reports:
            if result.ticket_id is None or result.status not in ("new", "existing", "regression"):
                continue
            if self._sample < 1.0 and random.random() >= self._sample:
                continue
            try:
                self._queue.put_nowait(_Job(tenant, service, text, embed_text, vector, result))
            except asyncio.QueueFull:
                self._count(tenant, "dropped")

    async def drained(self) -> None:
        """Wait until every report handed over so far was decided (for tests and shutdown)."""
        if self._queue is not None:
            await self._queue.join()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            job = await self._queue.get()
            try:
                verdict, disagreement = await asyncio.to_thread(self._decide, job)
            except Exception:  # a shadow never takes the service down; the report is skipped
                log.exception("shadow.failed", tenant=job.tenant, service=job.service)
            else:  # tallied on the event loop, where the report reads them
                self._count(job.tenant, verdict)
                if disagreement is not None:
                    self._tallies[job.tenant].disagreements.append(disagreement)
            finally:
                self._queue.task_done()

    # ------------------------------------------------------------------ deciding
    def _decide(self, job: _Job) -> tuple[Verdict, dict[str, Any] | None]:
        """Decide one report again (blocking: normalizing, maybe embedding, a matrix product):
        how it compares with the live decision, and the disagreement if it is one. Only the
        queue's one consumer runs it, so the memory has one writer."""
        norm = self._normalizer.normalize(job.log, job.tenant)
        vector = job.live_vector
        if vector is None or norm.embed_text != job.live_embed_text:
            vector = self._embedder.embed([norm.embed_text])[0]
        key = (job.tenant, job.service)
        memory = self._memory.get(key)
        if memory is None:
            memory = _Memory()
            self._memory.put(key, memory)
        decision = self._match(memory, norm.fingerprint, norm.template, vector)
        live = job.result
        live_ticket = NEW if live.status == "new" or live.ticket_id is None else live.ticket_id
        shadow_ticket = NEW if decision.ticket_id is None else decision.ticket_id
        if shadow_ticket == NEW and live_ticket != NEW and not memory.stands_for(live_ticket):
            verdict: Verdict = "warming_up"  # joined a ticket from before the shadow started
        else:
            verdict = "agree" if shadow_ticket == live_ticket else "disagree"
        if norm.fingerprint not in memory.forms:
            home = live.ticket_id if decision.ticket_id is None else decision.ticket_id
            memory.add(_Form(norm.fingerprint, norm.template, vector, home or ""))
        return verdict, _disagreement(job, decision, shadow_ticket) if verdict == "disagree" else None

    def _match(self, memory: _Memory, fingerprint: str, template: str, vector: Vector) -> MatchDecision:
        exact = memory.forms.get(fingerprint)
        if exact is not None:
            return MatchDecision(exact.ticket, "fingerprint", 1.0, template, (), 1.0, template)
        if not memory.forms:
            return MatchDecision(None, None, None, template, (), report_template=template)
        forms = list(memory.forms.values())
        scores = np.stack([f.vector for f in forms]) @ np.asarray(vector, dtype=np.float32)
        best = np.argsort(-scores)[: self._search_limit]
        candidates = [Candidate(forms[i].ticket, forms[i].template, float(scores[i])) for i in best]
        return choose_match(template, candidates, self._thresholds)

    def _count(self, tenant: str, verdict: Verdict) -> None:
        self._tallies.setdefault(tenant, _Tally()).counts[verdict] += 1
        self._on_verdict(verdict)

    # ------------------------------------------------------------------ report
    def report(self, tenant: str) -> dict[str, Any]:
        """Agreement so far for ``tenant``, and its newest disagreements (both explanations)."""
        tally = self._tallies.get(tenant, _Tally())
        agree, disagree = tally.counts["agree"], tally.counts["disagree"]
        compared = agree + disagree
        return {
            "enabled": True,
            "candidate": {
                "normalizer_version": self._version,
                "thresholds": dataclasses.asdict(self._thresholds),
                **self._config,
            },
            "counts": dict(tally.counts),
            "agreement": round(agree / compared, 4) if compared else None,
            "disagreements": list(reversed(tally.disagreements)),
        }


def _disagreement(job: _Job, decision: MatchDecision, shadow_ticket: str) -> dict[str, Any]:
    live = job.result
    return {
        "incident_id": live.incident_id,
        "service": job.service,
        "live": {
            "ticket_id": live.ticket_id,
            "status": live.status,
            "match": live.match.model_dump() if live.match is not None else None,
        },
        "shadow": {
            "would_join": shadow_ticket,  # a live ticket id, or "new"
            "method": decision.method,
            "similarity": None if decision.similarity is None else round(decision.similarity, 4),
            "threshold": decision.threshold,
            "template": decision.template,
            "report_template": decision.report_template,
            "differing_tokens": list(decision.differing),
            "why": decision.why() if decision.method is not None else "no remembered form is close enough",
        },
    }

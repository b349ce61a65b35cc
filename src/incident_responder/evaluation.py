"""In-process evaluation: the same metrics as the black-box runner, without HTTP.

Dedup: reports are replayed in file order through the real pipeline; per service,
pairwise precision/recall/F1 over all pairs of reports (a pair is positive when both
are in the same ticket / the same true group) and grouping accuracy (GA: the share
of reports whose ticket holds exactly the reports of their true group).
Retrieval: each query is a new incident; recall@1, recall@3 and MRR of the first
acceptable runbook id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from incident_responder.models import IncidentReport, IncidentResult, Runbook
from incident_responder.pipeline.chunking import runbook_title

if TYPE_CHECKING:
    from incident_responder.container import Services


@dataclass(frozen=True)
class GroupingScore:
    """How well tickets match the true groups of some reports: pairwise precision, recall and F1,
    and grouping accuracy (``ga``)."""

    reports: int
    true_groups: int
    tickets: int
    precision: float
    recall: float
    f1: float
    ga: float


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def grouping_score(truth: Sequence[str], predicted: Sequence[str]) -> GroupingScore:
    cells = Counter(zip(truth, predicted, strict=True))
    true_sizes, pred_sizes = Counter(truth), Counter(predicted)
    tp = sum(_pairs(c) for c in cells.values())
    pred_pairs = sum(_pairs(c) for c in pred_sizes.values())
    true_pairs = sum(_pairs(c) for c in true_sizes.values())
    p = tp / pred_pairs if pred_pairs else 1.0
    r = tp / true_pairs if true_pairs else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    exact = sum(c for (t, q), c in cells.items() if c == true_sizes[t] == pred_sizes[q])
    return GroupingScore(
        len(truth), len(true_sizes), len(pred_sizes), p, r, f1, exact / len(truth) if truth else 0.0
    )


@dataclass(frozen=True)
class RankScore:
    """Where the first acceptable runbook ranks over ``queries``: recall@1, recall@3 and MRR."""

    recall_at_1: float
    recall_at_3: float
    mrr: float
    queries: int


def rank_score(rankings: Sequence[tuple[Sequence[str], set[str]]]) -> RankScore:
    r1 = r3 = rr = 0.0
    for ranked, acceptable in rankings:
        rank = next((i + 1 for i, rid in enumerate(ranked) if rid in acceptable), None)
        if rank is not None:
            r1 += rank == 1
            r3 += rank <= 3
            rr += 1.0 / rank
    n = len(rankings) or 1
    return RankScore(r1 / n, r3 / n, rr / n, len(rankings))


@dataclass
class EvalReport:
    """The scores of one :func:`evaluate` run: dedup per service, retrieval overall and per query
    variant, and the seconds each part took."""

    dedup_per_service: dict[str, GroupingScore] = field(default_factory=dict)
    retrieval: dict[str, RankScore] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def macro(self) -> dict[str, float]:
        scores = list(self.dedup_per_service.values())
        if not scores:
            return {}
        n = len(scores)
        return {
            "precision": sum(s.precision for s in scores) / n,
            "recall": sum(s.recall for s in scores) / n,
            "f1": sum(s.f1 for s in scores) / n,
            "ga": sum(s.ga for s in scores) / n,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "dedup": {
                "macro": self.macro(),
                "per_service": {k: asdict(v) for k, v in sorted(self.dedup_per_service.items())},
            },
            "retrieval": {k: asdict(v) for k, v in self.retrieval.items()},
            "seconds": self.seconds,
        }

    def last_line(self) -> str:
        m = self.macro()
        overall = self.retrieval.get("overall")

        def fmt(x: float | None) -> str:
            return "na" if x is None else f"{x:.4f}"

        return (
            f"dedup_f1={fmt(m.get('f1'))} ga={fmt(m.get('ga'))} "
            f"runbook_r@1={fmt(overall.recall_at_1 if overall else None)} "
            f"runbook_mrr={fmt(overall.mrr if overall else None)}"
        )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_runbook_dir(directory: Path) -> list[Runbook]:
    out = []
    for path in sorted(directory.glob("*.md")):
        content = path.read_text(encoding="utf-8")
        out.append(Runbook(id=path.stem, title=runbook_title(content, path.stem), content=content))
    return out


Progress = Callable[[str, int, int], None]


async def evaluate(
    data: Path,
    *,
    only: str = "all",
    limit: int = 0,
    progress: Progress | None = None,
    embedder: Any = None,
) -> EvalReport:
    """Run the evaluation in a throw-away data dir with the real pipeline."""
    import time

    from incident_responder.container import build_services
    from incident_responder.settings import Settings

    report = EvalReport()
    tick = progress or (lambda *_: None)
    with tempfile.TemporaryDirectory(prefix="ir-eval-") as tmp:
        settings = Settings(data_dir=Path(tmp), insecure_no_auth=True)
        services = build_services(settings, embedder=embedder)
        try:
            tenant = "eval"
            queries_path, dedup_path = data / "runbook_queries.jsonl", data / "dedup.jsonl"
            if only in ("all", "runbooks") and queries_path.exists():
                started = time.perf_counter()
                runbooks = load_runbook_dir(data / "runbooks")
                for i, runbook in enumerate(runbooks):
                    services.catalog.put(tenant, runbook)
                    tick("runbooks", i + 1, len(runbooks))
                report.seconds["load_runbooks"] = time.perf_counter() - started
            if only in ("all", "dedup") and dedup_path.exists():
                started = time.perf_counter()
                records = _limited(read_jsonl(dedup_path), limit)
                replay = await replay_dedup(services, tenant, records, progress=tick)
                report.dedup_per_service = replay.scores()
                report.seconds["dedup"] = time.perf_counter() - started
            if only in ("all", "runbooks") and queries_path.exists():
                started = time.perf_counter()
                queries = read_jsonl(queries_path)
                by_variant: dict[str, list[tuple[list[str], set[str]]]] = defaultdict(list)
                for i, q in enumerate(queries):
                    result = await services.responder.handle(
                        tenant, IncidentReport(service=f"rq-{q['qid']}", log=q["log"])
                    )
                    ranking = ([r.id for r in result.runbooks], set(q["acceptable"]))
                    by_variant["overall"].append(ranking)
                    by_variant[q.get("variant") or "unknown"].append(ranking)
                    tick("queries", i + 1, len(queries))
                report.retrieval = {k: rank_score(v) for k, v in by_variant.items()}
                report.seconds["retrieval"] = time.perf_counter() - started
        finally:
            services.close()
    return report


class _Replay:
    """A labelled replay's state: per report its true group, its current ticket and form; and
    the corrections a simulated person made. Counts per group and per ticket are kept as
    reports arrive (recounted only after a correction, at most once per correction)."""

    def __init__(self) -> None:
        self.services: list[str] = []
        self.truth: list[str] = []
        self.ticket: list[str] = []
        self.fingerprint: list[str] = []
        self.corrections = 0
        self._by_group: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        self._by_ticket: dict[str, Counter[str]] = defaultdict(Counter)

    def add(self, service: str, group: str, result: IncidentResult, i: int) -> None:
        self.services.append(service)
        self.truth.append(group)
        self.ticket.append(result.ticket_id or f"__none_{i}")
        self.fingerprint.append(result.fingerprint or "")

    def count(self, i: int) -> None:
        """Count report ``i`` (after its correction, if any) for the next decisions."""
        self._by_group[(self.services[i], self.truth[i])][self.ticket[i]] += 1
        self._by_ticket[self.ticket[i]][self.truth[i]] += 1

    def home_of(self, service: str, group: str) -> str | None:
        """The ticket holding most of the reports of ``group`` counted so far (None: none yet)."""
        counts = self._by_group.get((service, group))
        return counts.most_common(1)[0][0] if counts else None

    def owner_of(self, ticket: str) -> str | None:
        """The true group most reports counted so far of ``ticket`` belong to."""
        counts = self._by_ticket.get(ticket)
        return counts.most_common(1)[0][0] if counts else None

    def merged(self, source: str, into: str) -> None:
        self.ticket = [into if t == source else t for t in self.ticket]
        self._recount()

    def split(self, ticket: str, fingerprint: str, into: str) -> None:
        self.ticket = [
            into if t == ticket and fp == fingerprint else t
            for t, fp in zip(self.ticket, self.fingerprint, strict=True)
        ]
        self._recount()

    def _recount(self) -> None:
        self._by_group.clear()
        self._by_ticket.clear()
        for i in range(len(self.ticket) - 1):  # the last report is counted by the caller
            self.count(i)

    def scores(self) -> dict[str, GroupingScore]:
        by_service: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
        for service, truth, ticket in zip(self.services, self.truth, self.ticket, strict=True):
            by_service[service][0].append(truth)
            by_service[service][1].append(ticket)
        return {s: grouping_score(t, p) for s, (t, p) in by_service.items()}


async def replay_dedup(
    services: Services,
    tenant: str,
    records: Sequence[dict[str, Any]],
    *,
    corrections: int = 0,
    progress: Progress | None = None,
) -> _Replay:
    """Post ``records`` in order; a simulated person corrects the first ``corrections`` wrong
    decisions as they happen, as a person would with the API: a report that opened a ticket
    although its group has one is merged into that one; a report that joined a ticket of
    another group is split off it (its form with it). A decision that cannot be corrected
    (a split that would leave nothing) is left as it is and not counted."""
    from incident_responder.errors import IncidentResponderError

    state = _Replay()
    tick = progress or (lambda *_: None)
    for i, rec in enumerate(records):
        service, group = str(rec["service"]), str(rec["group"])
        result = await services.responder.handle(tenant, IncidentReport(service=service, log=rec["log"]))
        state.add(service, group, result, i)
        tick("dedup", i + 1, len(records))
        ticket = result.ticket_id
        if state.corrections < corrections and ticket is not None:
            with contextlib.suppress(IncidentResponderError):  # not correctable: left as it is
                await _correct(services, tenant, state, i, result)
        state.count(i)
    return state


async def _correct(services: Services, tenant: str, state: _Replay, i: int, result: IncidentResult) -> None:
    """What a person would do about report ``i``'s decision, if it was wrong."""
    ticket = result.ticket_id
    assert ticket is not None
    group = state.truth[i]
    home = state.home_of(state.services[i], group)
    if result.status == "new" and home is not None and home != ticket:
        await asyncio.to_thread(services.corrections.merge, tenant, ticket, home)
        state.merged(ticket, home)
        state.corrections += 1
    elif result.status != "new" and state.owner_of(ticket) not in (None, group):
        new = await asyncio.to_thread(services.corrections.split, tenant, ticket, [result.incident_id])
        state.split(ticket, state.fingerprint[i], new.ticket_id)
        state.corrections += 1


@dataclass(frozen=True)
class LearningPoint:
    """Grouping quality after a simulated person corrected up to ``budget`` wrong decisions."""

    budget: int
    corrections: int  # how many were made (there may have been fewer wrong decisions)
    f1: float
    ga: float
    per_service: dict[str, GroupingScore] = field(default_factory=dict)


async def learning_curve(
    data: Path, budgets: Sequence[int] = (0, 1, 5, 20), *, limit: int = 0, embedder: Any = None
) -> list[LearningPoint]:
    """Replay ``data``'s dedup.jsonl once per budget, each in a fresh data dir, correcting the
    first ``budget`` wrong decisions (see :func:`replay_dedup`); macro F1 and GA of each."""
    from incident_responder.container import build_services
    from incident_responder.settings import Settings

    records = _limited(read_jsonl(data / "dedup.jsonl"), limit)
    out = []
    for budget in budgets:
        with tempfile.TemporaryDirectory(prefix="ir-learn-") as tmp:
            services = build_services(Settings(data_dir=Path(tmp), insecure_no_auth=True), embedder=embedder)
            try:
                replay = await replay_dedup(services, "eval", records, corrections=budget)
            finally:
                services.close()
        per_service = replay.scores()
        scores = list(per_service.values())
        n = len(scores) or 1
        out.append(
            LearningPoint(
                budget,
                replay.corrections,
                sum(s.f1 for s in scores) / n,
                sum(s.ga for s in scores) / n,
                per_service,
            )
        )
    return out


def _limited(records: Iterable[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    if not limit:
        return list(records)
    seen: Counter[str] = Counter()
    kept = []
    for rec in records:
        seen[rec["service"]] += 1
        if seen[rec["service"]] <= limit:
            kept.append(rec)
    return kept

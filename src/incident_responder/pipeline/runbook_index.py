"""Hybrid (BM25 + dense) runbook retrieval over one tenant's runbooks, in memory.

The library ranks *runbooks*, not chunks. Per runbook it combines:

- a BM25 score over a runbook-level field document (title, id, alert names, front matter and
  headings, then the whole body) and the best BM25 score over its heading chunks;
- a BM25 score over a small *name* field (id, title, front matter title): the id and title of a
  runbook are often the alert name itself;
- the best cosine similarity between the query vector and the runbook's chunk vectors;
- an exact alert-name match (``alertname=KubePodCrashLooping`` in the log equals the runbook id,
  title or id suffix, case and separators ignored), which lifts the runbook to the top.

Scores are fused (a calibrated weighted sum by default, reciprocal rank fusion as an option) into
``[0, 1]`` so that a single ``min_score`` cutoff means roughly the same thing for every query.

Text is tokenized by ``text.terms.tokenize``; the log is read by ``alert_text.parse_log``.

Indexes are rebuilt lazily: :meth:`RunbookIndex.put` and :meth:`RunbookIndex.remove` only mark
them dirty. Searches run on an immutable snapshot, so they never block each other for long and
are safe to run concurrently with writers.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import bm25s
import numpy as np
import numpy.typing as npt

from incident_responder.models import Runbook, RunbookChunk, RunbookHit
from incident_responder.pipeline.alert_text import CAMEL_IDENT_RE, parse_log, query_text
from incident_responder.text.markdown import front_matter_title, split_front_matter
from incident_responder.text.terms import normalize_name, tokenize

logging.getLogger("bm25s").setLevel(logging.WARNING)

Fusion = Literal["weighted", "rrf"]
FloatArray = npt.NDArray[np.float32]
_TITLE_WORD_END_RE = re.compile(r"[\s:(\[]")


@dataclass(frozen=True)
class _IndexedRunbook:
    runbook: Runbook
    chunks: tuple[RunbookChunk, ...]
    vectors: FloatArray  # (len(chunks), dim)
    names: frozenset[str]  # normalized alert-name keys
    name_tokens: tuple[str, ...]
    doc_tokens: tuple[str, ...]
    chunk_tokens: tuple[tuple[str, ...], ...]


def _runbook_names(runbook: Runbook) -> tuple[frozenset[str], str]:
    """Normalized alert-name keys of a runbook and the text of its name field."""
    front, _ = split_front_matter(runbook.content)
    front_title = front_matter_title(front) or ""
    candidates = [runbook.id, runbook.title, front_title]
    # Ids such as "ocp-cluster-etcd-operator-etcdNoLeader" end in the alert name, and titles such
    # as "KubeletDown [Deprecated]" start with it; only CamelCase parts count (not "pressure").
    for sep in ("-", "/", ":", "."):
        if sep in runbook.id:
            candidates.append(runbook.id.rsplit(sep, 1)[1])
    candidates.append(_TITLE_WORD_END_RE.split(runbook.title.strip(), maxsplit=1)[0])
    candidates[3:] = [c for c in candidates[3:] if CAMEL_IDENT_RE.fullmatch(c)]
    names = frozenset(n for n in (normalize_name(c) for c in candidates) if len(n) >= 4)
    name_text = " ".join(
        dict.fromkeys(c for c in (runbook.id, runbook.title, front_title, *runbook.tags) if c)
    )
    return names, name_text


def _indexed(runbook: Runbook, chunks: Sequence[RunbookChunk], vectors: FloatArray) -> _IndexedRunbook:
    names, name_text = _runbook_names(runbook)
    name_tokens = tuple(tokenize(name_text))
    front, body = split_front_matter(runbook.content)
    chunk_tokens = tuple(tuple(tokenize(f"{c.heading}\n{c.text}")) for c in chunks)
    doc_tokens = (
        name_tokens
        + tuple(tokenize(" ".join(runbook.services)))
        + tuple(tokenize(front))
        + tuple(tokenize(body if not chunks else "\n".join(c.text for c in chunks)))
    )
    return _IndexedRunbook(
        runbook=runbook,
        chunks=tuple(chunks),
        vectors=vectors,
        names=names,
        name_tokens=name_tokens,
        doc_tokens=doc_tokens,
        chunk_tokens=chunk_tokens,
    )


class _Bm25Field:
    """One BM25 index over a list of token lists."""

    def __init__(self, docs: Sequence[Sequence[str]], *, k1: float, b: float) -> None:
        self.size = len(docs)
        self._model: Any = None
        if any(docs):
            self._model = bm25s.BM25(k1=k1, b=b, method="lucene")
            self._model.index([list(d) for d in docs], show_progress=False)

    def scores(self, tokens: Sequence[str]) -> FloatArray:
        if self._model is None or not tokens:
            return np.zeros(self.size, dtype=np.float32)
        ids = self._model.get_tokens_ids(list(tokens))
        if not ids:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self._model.get_scores_from_ids(ids), dtype=np.float32)


@dataclass(frozen=True)
class _Snapshot:
    """Immutable search state built from the entries at one generation."""

    generation: int
    entries: list[_IndexedRunbook]  # sorted by runbook id (ties in score break by id)
    name_keys: dict[str, list[int]]  # normalized alert name -> entry positions
    chunk_owner: npt.NDArray[np.int64]  # chunk row -> entry position
    chunk_start: list[int]  # entry position -> first chunk row
    vectors: FloatArray  # (total_chunks, dim)
    dim: int | None
    name_index: _Bm25Field
    doc_index: _Bm25Field
    chunk_index: _Bm25Field
    idf_unit: float  # BM25 (Lucene) IDF of a term found in exactly one runbook


class RunbookIndex:
    """In-memory hybrid (BM25 + dense) search over ONE tenant's runbooks; ranks runbooks, not chunks.

    ``search`` returns ``(hit, chunks)`` pairs, best first, with ``hit.score`` in ``[0, 1]`` and at
    least ``min_score``; ``chunks`` are the runbook's best-matching chunks (at most
    ``chunks_per_hit``, in document order) for grounding a recommendation.

    Defaults were chosen with ``scripts/tune_retrieval.py`` on the dev split (all-MiniLM-L6-v2):
    ``weighted`` fusion beat reciprocal rank fusion there and, unlike it, yields scores that mean
    the same thing across queries, which ``min_score`` relies on. ``bm25_weight``/``dense_weight``
    weigh the two normalized signals; ``name_weight``/``chunk_weight`` weigh the name field and
    the best chunk against the runbook-level document inside BM25. BM25 scores are first divided by
    the IDF of a term that occurs in a single runbook (so that they mean the same in a library of 10
    or of 1,000 runbooks), then ``bm25_saturation`` maps them to ``s / (s_top + saturation)``
    (relative to the query's best runbook, scaled by how strong that match is); cosine is
    mapped linearly from ``[dense_floor, dense_ceiling]`` to ``[0, 1]``. When the log names an alert
    that equals a runbook's alert name, those runbooks score in ``[exact_match_floor, 1]`` and all
    others are scaled into ``[0, exact_match_floor]`` (``exact_match_floor=0`` disables this).
    """

    def __init__(
        self,
        *,
        bm25_weight: float = 0.4,
        dense_weight: float = 0.5,
        name_weight: float = 0.5,
        chunk_weight: float = 0.5,
        fusion: Fusion = "weighted",
        rrf_k: float = 60.0,
        bm25_saturation: float = 0.9,
        dense_floor: float = 0.1,
        dense_ceiling: float = 0.8,
        exact_match_floor: float = 0.9,
        min_score: float = 0.5,
        chunks_per_hit: int = 2,
        k1: float = 1.2,
        b: float = 0.75,
    ) -> None:
        if bm25_weight < 0 or dense_weight < 0 or bm25_weight + dense_weight <= 0:
            raise ValueError("bm25_weight and dense_weight must be >= 0 and not both 0")
        if not 0.0 <= min_score <= 1.0 or not 0.0 <= exact_match_floor <= 1.0:
            raise ValueError("min_score and exact_match_floor must be in [0, 1]")
        if dense_ceiling <= dense_floor:
            raise ValueError("dense_ceiling must be above dense_floor")
        if fusion not in ("weighted", "rrf"):
            raise ValueError(f"unknown fusion {fusion!r}")
        self.bm25_weight = bm25_weight
        self.dense_weight = dense_weight
        self.name_weight = name_weight
        self.chunk_weight = chunk_weight
        self.fusion: Fusion = fusion
        self.rrf_k = rrf_k
        self.bm25_saturation = bm25_saturation
        self.dense_floor = dense_floor
        self.dense_ceiling = dense_ceiling
        self.exact_match_floor = exact_match_floor
        self.min_score = min_score
        self.chunks_per_hit = chunks_per_hit
        self.k1 = k1
        self.b = b
        self._lock = threading.Lock()  # guards _entries, _generation, _snapshot
        self._build_lock = threading.Lock()  # one index rebuild at a time
        self._entries: dict[str, _IndexedRunbook] = {}
        self._generation = 0
        self._snapshot: _Snapshot | None = None

    # ------------------------------------------------------------------ writes and reads

    def put(self, runbook: Runbook, chunks: Sequence[RunbookChunk], chunk_vectors: np.ndarray) -> None:
        """Add or replace ``runbook``; ``chunk_vectors[i]`` is the embedding of ``chunks[i]``.

        Cheap: the text is tokenized here, indexes are rebuilt on the next search.
        """
        vectors = np.array(chunk_vectors, dtype=np.float32)  # a private copy
        if vectors.size == 0 and not chunks:
            vectors = vectors.reshape(0, 0)
        if vectors.ndim != 2 or vectors.shape[0] != len(chunks):
            raise ValueError(f"expected {len(chunks)} chunk vectors, got array of shape {vectors.shape}")
        for chunk in chunks:
            if chunk.runbook_id != runbook.id:
                raise ValueError(f"chunk of runbook {chunk.runbook_id!r} passed for {runbook.id!r}")
        entry = _indexed(runbook, chunks, vectors)
        with self._lock:
            if chunks:
                dim = self._dim_locked(exclude=runbook.id)
                if dim is not None and vectors.shape[1] != dim:
                    raise ValueError(f"chunk vectors have dim {vectors.shape[1]}, library uses {dim}")
            self._entries[runbook.id] = entry
            self._generation += 1

    def remove(self, runbook_id: str) -> bool:
        """Drop a runbook; False if it was not there."""
        with self._lock:
            if self._entries.pop(runbook_id, None) is None:
                return False
            self._generation += 1
            return True

    def get(self, runbook_id: str) -> Runbook | None:
        with self._lock:
            entry = self._entries.get(runbook_id)
        return entry.runbook if entry else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def chunks(self, runbook_id: str) -> list[RunbookChunk]:
        """All chunks of a runbook, in document order ([] if unknown)."""
        with self._lock:
            entry = self._entries.get(runbook_id)
        return list(entry.chunks) if entry else []

    def _dim_locked(self, exclude: str | None = None) -> int | None:
        for rid, entry in self._entries.items():
            if rid != exclude and entry.chunks:
                return int(entry.vectors.shape[1])
        return None

    # ------------------------------------------------------------------ query side

    def query_text(self, log: str) -> str:
        """The text to embed for ``log`` (see :func:`query_text`)."""
        return query_text(log)

    def search(
        self, log: str, query_vector: np.ndarray, top_k: int = 5
    ) -> list[tuple[RunbookHit, list[RunbookChunk]]]:
        """Best runbooks for ``log`` (``query_vector`` = embedding of :meth:`query_text`), best first."""
        snap = self._current_snapshot()
        if top_k <= 0 or not snap.entries:
            return []
        parsed = parse_log(log)
        query = (tokenize(parsed.alertname) if parsed.alertname else []) + tokenize(parsed.text)

        # Sparse: runbook-level document, best chunk, name field.
        n = len(snap.entries)
        chunk_bm = snap.chunk_index.scores(query)
        best_chunk_bm = np.zeros(n, dtype=np.float32)
        if len(chunk_bm):
            np.maximum.at(best_chunk_bm, snap.chunk_owner, chunk_bm)
        sparse = (
            snap.doc_index.scores(query)
            + self.chunk_weight * best_chunk_bm
            + self.name_weight * snap.name_index.scores(query)
        ) / snap.idf_unit

        # Dense: best chunk cosine per runbook (NaN: no vectors, or no usable query vector).
        dense = np.full(n, np.nan, dtype=np.float32)
        chunk_cos = np.zeros(len(snap.chunk_owner), dtype=np.float32)
        if snap.dim is not None:
            q = np.asarray(query_vector, dtype=np.float32).reshape(-1)
            if q.shape[0] != snap.dim:
                raise ValueError(f"query vector has dim {q.shape[0]}, library uses {snap.dim}")
            norm = float(np.linalg.norm(q))
            if norm > 0:
                chunk_cos = snap.vectors @ (q / norm)
                np.fmax.at(dense, snap.chunk_owner, chunk_cos)

        exact = np.zeros(n, dtype=bool)
        for candidate in parsed.name_candidates:
            for pos in snap.name_keys.get(normalize_name(candidate), []):
                exact[pos] = True

        fused = self._fuse(sparse, dense, exact)
        order = np.argsort(-fused, kind="stable")  # entries are sorted by id: ties break by id
        top_bm = float(chunk_bm.max()) if len(chunk_bm) else 0.0
        results: list[tuple[RunbookHit, list[RunbookChunk]]] = []
        for pos in order[:top_k].tolist():
            score = round(float(fused[pos]), 4)
            if score < self.min_score:
                break
            entry = snap.entries[pos]
            start = snap.chunk_start[pos]
            rows = range(start, start + len(entry.chunks))
            # Chunk evidence: cosine plus BM25 relative to the best chunk of the query.
            evidence = [
                float(chunk_cos[r]) + (float(chunk_bm[r]) / top_bm if top_bm > 0 else 0.0) for r in rows
            ]
            best = sorted(range(len(evidence)), key=lambda i: -evidence[i])[: self.chunks_per_hit]
            hit = RunbookHit(id=entry.runbook.id, title=entry.runbook.title, score=score)
            results.append((hit, [entry.chunks[i] for i in sorted(best)]))
        return results

    # ------------------------------------------------------------------ internals

    def _current_snapshot(self) -> _Snapshot:
        with self._lock:
            snap, generation = self._snapshot, self._generation
            if snap is not None and snap.generation == generation:
                return snap
        with self._build_lock:
            with self._lock:  # another thread may have rebuilt while we waited
                snap, generation = self._snapshot, self._generation
                if snap is not None and snap.generation == generation:
                    return snap
                entries = list(self._entries.values())
            snap = self._build(entries, generation)  # outside the state lock: writers are not blocked
            with self._lock:
                if self._generation == generation:
                    self._snapshot = snap
            return snap

    def _build(self, entries: list[_IndexedRunbook], generation: int) -> _Snapshot:
        entries.sort(key=lambda e: e.runbook.id)
        name_keys: dict[str, list[int]] = {}
        owners: list[int] = []
        starts: list[int] = []
        blocks: list[FloatArray] = []
        chunk_docs: list[tuple[str, ...]] = []
        for pos, entry in enumerate(entries):
            for key in entry.names:
                name_keys.setdefault(key, []).append(pos)
            starts.append(len(owners))
            if entry.chunks:
                owners.extend([pos] * len(entry.chunks))
                blocks.append(entry.vectors)
                chunk_docs.extend(entry.chunk_tokens)
        return _Snapshot(
            generation=generation,
            entries=entries,
            name_keys=name_keys,
            chunk_owner=np.asarray(owners, dtype=np.int64),
            chunk_start=starts,
            vectors=np.concatenate(blocks, axis=0) if blocks else np.zeros((0, 0), dtype=np.float32),
            dim=int(blocks[0].shape[1]) if blocks else None,
            name_index=_Bm25Field([e.name_tokens for e in entries], k1=self.k1, b=self.b),
            doc_index=_Bm25Field([e.doc_tokens for e in entries], k1=self.k1, b=self.b),
            chunk_index=_Bm25Field(chunk_docs, k1=self.k1, b=self.b),
            idf_unit=max(math.log(1.0 + (len(entries) - 0.5) / 1.5), 0.1),
        )

    def _fuse(self, sparse: FloatArray, dense: FloatArray, exact: npt.NDArray[np.bool_]) -> FloatArray:
        """Combine per-runbook sparse and dense scores into [0, 1]; exact name matches on top."""
        wb, wd = self.bm25_weight, self.dense_weight
        if self.fusion == "rrf":
            fused = wb * _rrf(sparse, self.rrf_k) + wd * _rrf(np.nan_to_num(dense, nan=-1.0), self.rrf_k)
            fused = fused * ((self.rrf_k + 1.0) / (wb + wd))  # rank 1 in both lists -> 1.0
        else:
            top = float(sparse.max())
            # Relative to the query's best runbook, scaled by how strong that best match is.
            sparse_n = sparse / (top + self.bm25_saturation) if top > 0 else np.zeros_like(sparse)
            span = self.dense_ceiling - self.dense_floor
            dense_n = np.clip((np.nan_to_num(dense, nan=-1.0) - self.dense_floor) / span, 0.0, 1.0)
            # A runbook without chunk vectors has no dense evidence either way: judge it on BM25 alone.
            fused = np.where(np.isnan(dense), sparse_n, (wb * sparse_n + wd * dense_n) / (wb + wd))
        fused = np.clip(fused, 0.0, 1.0)
        floor = self.exact_match_floor
        if floor > 0 and exact.any():
            # Exact alert-name matches go to [floor, 1], everything else to [0, floor]: they always win.
            fused = np.where(exact, floor + (1.0 - floor) * fused, floor * fused)
        return fused.astype(np.float32)


def _rrf(values: FloatArray, k: float) -> FloatArray:
    """Reciprocal-rank contribution 1/(k + rank) per element (rank 1 = highest; non-positive get 0)."""
    order = np.argsort(-values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float32)
    ranks[order] = np.arange(1, len(values) + 1, dtype=np.float32)
    return np.where(values > 0, 1.0 / (k + ranks), 0.0).astype(np.float32)

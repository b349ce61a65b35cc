"""Selecting the steps of an offline recommendation from the pieces of the retrieved runbooks."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from incident_responder.backends.recommenders.offline.reader import (
    ChunkParser,
    Piece,
    actionable,
    informative,
    truncate,
)
from incident_responder.backends.recommenders.offline.sections import ACTION_KINDS, LABELS, Kind, heading_kind
from incident_responder.backends.recommenders.offline.terms import terms
from incident_responder.models import Recommendation, RunbookChunk
from incident_responder.text.markdown import SPACE_RE, plain_inline

SOURCE = "offline-extractive"
MAX_SECTION_SENTENCES = 3
LOG_HEAD_CHARS = 8_000
LOG_TAIL_CHARS = 8_000
KEY_RE = re.compile(r"[\W_]+")


def _tier(piece: Piece) -> int | None:
    """How good a piece is as a step (lower is better); None if it is never a step."""
    if piece.is_item:
        if piece.kind in ACTION_KINDS:
            return 0
        return None if piece.kind is Kind.INFO else 1
    if not informative(piece.text):
        return None
    return 3 if piece.kind is Kind.INFO else 2


@dataclass(frozen=True)
class _Candidate:
    runbook_id: str
    rank: int  # of the runbook in the retrieved order
    pos: tuple[int, int]  # (chunk_no, index in the chunk)
    tier: int
    kind: Kind
    text: str
    terms: frozenset[str] = frozenset()
    score: float = 0.0
    matches: int = 0

    def with_terms(self, terms: frozenset[str]) -> _Candidate:
        return _Candidate(self.runbook_id, self.rank, self.pos, self.tier, self.kind, self.text, terms)

    def with_score(self, score: float, matches: int) -> _Candidate:
        return _Candidate(
            self.runbook_id, self.rank, self.pos, self.tier, self.kind, self.text, self.terms, score, matches
        )


def _pick(candidates: Sequence[_Candidate], quota: int) -> list[_Candidate]:
    """Up to ``quota`` candidates of one runbook (all of one tier), best first within each group."""
    if quota <= 0 or not candidates:
        return []
    if candidates[0].tier != 0:
        if candidates[0].tier == 1:
            return sorted(candidates, key=lambda c: (-c.score, c.pos))[:quota]
        # Sentence fallback: the first informative sentences, action sections first.
        by_section = sorted(candidates, key=lambda c: (c.kind is Kind.INFO, c.pos))
        per_chunk: dict[int, int] = {}
        chosen: list[_Candidate] = []
        for c in by_section:
            if per_chunk.get(c.pos[0], 0) < MAX_SECTION_SENTENCES:
                per_chunk[c.pos[0]] = per_chunk.get(c.pos[0], 0) + 1
                chosen.append(c)
        return chosen[:quota]
    order = (Kind.MITIGATE, Kind.DIAGNOSE, Kind.VERIFY)
    groups = {
        k: sorted((c for c in candidates if c.kind is k), key=lambda c: (-c.score, c.pos)) for k in order
    }
    take = {
        Kind.MITIGATE: min(len(groups[Kind.MITIGATE]), (quota + 1) // 2),
        Kind.DIAGNOSE: min(len(groups[Kind.DIAGNOSE]), quota // 2),
        Kind.VERIFY: 0,
    }
    left = quota - sum(take.values())
    for k in order:
        extra = min(len(groups[k]) - take[k], left)
        take[k] += extra
        left -= extra
    return [c for k in order for c in groups[k][: take[k]]]


class OfflineRecommender:
    """Builds a recommendation from the retrieved runbook text itself: extractive, grounded, deterministic."""

    def __init__(self, *, max_steps: int = 6) -> None:
        if max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        self._max_steps = max_steps

    @property
    def name(self) -> str:
        return SOURCE

    @property
    def remote(self) -> bool:
        return False

    @property
    def max_steps(self) -> int:
        return self._max_steps

    def recommend(
        self, log: str, chunks: Sequence[RunbookChunk], titles: Mapping[str, str]
    ) -> Recommendation | None:
        """Steps lifted from ``chunks`` (best runbook first), each citing its runbook; None if none can be."""
        if not chunks:
            return None
        ranks: dict[str, int] = {}
        by_runbook: dict[str, list[RunbookChunk]] = {}
        seen: set[tuple[str, int]] = set()
        for chunk in chunks:
            if (chunk.runbook_id, chunk.chunk_no) in seen:
                continue
            seen.add((chunk.runbook_id, chunk.chunk_no))
            ranks.setdefault(chunk.runbook_id, len(ranks))
            by_runbook.setdefault(chunk.runbook_id, []).append(chunk)

        candidates = self._candidates(by_runbook, ranks, titles)
        candidates = _scored(candidates, _log_terms(log))
        picked = self._select(candidates, len(ranks))
        if not picked:
            return None

        best = chunks[0].runbook_id
        cited = sorted({c.runbook_id for c in picked}, key=ranks.__getitem__)
        title = _title(best, by_runbook[best], titles)
        listed = f"runbook: {cited[0]}" if len(cited) == 1 else "runbooks: " + ", ".join(cited)
        summary = f'Likely "{title}" (runbook {best}). Steps below are taken from {listed}.'
        steps = [_render(c) for c in sorted(picked, key=lambda c: (c.kind, c.rank, c.pos))]
        return Recommendation(summary=summary, steps=steps, source=SOURCE, runbook_ids=cited)

    @staticmethod
    def _candidates(
        by_runbook: Mapping[str, Sequence[RunbookChunk]], ranks: Mapping[str, int], titles: Mapping[str, str]
    ) -> list[_Candidate]:
        """Every usable, deduplicated piece of every runbook, keeping only each runbook's best tier."""
        seen_keys: set[str] = set()
        out: list[_Candidate] = []
        for runbook_id, rank in ranks.items():
            title = titles.get(runbook_id) or ""
            mine: list[_Candidate] = []
            for chunk_no, heading, text in _sections(by_runbook[runbook_id]):
                pieces = ChunkParser(heading_kind(heading, title)).parse(text)
                for index, piece in enumerate(pieces):
                    tier = _tier(piece)
                    step = truncate(piece.text)
                    if tier is None or (piece.is_item and not actionable(step)):
                        continue
                    key = KEY_RE.sub(" ", step.lower()).strip()
                    if not key or key in seen_keys:
                        continue
                    seen_keys.add(key)
                    mine.append(_Candidate(runbook_id, rank, (chunk_no, index), tier, piece.kind, step))
            if mine:
                best_tier = min(c.tier for c in mine)
                out.extend(c.with_terms(terms(c.text)) for c in mine if c.tier == best_tier)
        return out

    def _select(self, candidates: Sequence[_Candidate], runbooks: int) -> list[_Candidate]:
        budget = self._max_steps
        primary = [c for c in candidates if c.rank == 0]
        others = [c for c in candidates if c.rank > 0 and c.tier <= 2]
        # Up to a third of the budget for other runbooks' steps that clearly match the log.
        strong = sorted((c for c in others if c.matches >= 2), key=lambda c: (-c.score, c.rank, c.pos))
        picked = strong[: budget // 3]
        picked = _pick(primary, budget - len(picked)) + picked
        # Room left (a short best runbook): other runbooks' steps that match the log at all, by rank;
        # if still nothing at all, any of their steps rather than none.
        _fill(picked, [c for c in others if c.matches > 0], budget, runbooks)
        if not picked:
            _fill(picked, others, budget, runbooks)
        return picked


def _fill(picked: list[_Candidate], pool: Sequence[_Candidate], budget: int, runbooks: int) -> None:
    """Top ``picked`` up to ``budget`` from ``pool``, runbook by runbook in rank order."""
    taken = {(c.runbook_id, c.pos) for c in picked}
    for rank in range(1, runbooks):
        left = budget - len(picked)
        if left <= 0:
            return
        mine = [c for c in pool if c.rank == rank and (c.runbook_id, c.pos) not in taken]
        picked.extend(_pick(mine, left))


def _sections(chunks: Sequence[RunbookChunk]) -> list[tuple[int, str, str]]:
    """``(first chunk_no, heading, text)`` of one runbook, in document order.

    Consecutive chunks with the same heading are pieces of one long section (split by the chunker,
    possibly in the middle of a list item): they are rejoined so that an item and its command stay one.
    """
    out: list[tuple[int, str, str]] = []
    last_no: int | None = None
    for chunk in sorted(chunks, key=lambda c: c.chunk_no):
        if out and last_no is not None and chunk.chunk_no == last_no + 1 and chunk.heading == out[-1][1]:
            first, heading, text = out[-1]
            out[-1] = (first, heading, f"{text}\n{chunk.text}")
        else:
            out.append((chunk.chunk_no, chunk.heading, chunk.text))
        last_no = chunk.chunk_no
    return out


def _log_terms(log: str) -> frozenset[str]:
    if len(log) > LOG_HEAD_CHARS + LOG_TAIL_CHARS:
        log = f"{log[:LOG_HEAD_CHARS]}\n{log[-LOG_TAIL_CHARS:]}"
    return terms(log)


def _scored(candidates: Sequence[_Candidate], log_terms: frozenset[str]) -> list[_Candidate]:
    """Candidates with their IDF-weighted overlap with the log (IDF over the candidates themselves)."""
    if not candidates or not log_terms:
        return list(candidates)
    df: dict[str, int] = {}
    for c in candidates:
        for term in c.terms & log_terms:
            df[term] = df.get(term, 0) + 1
    n = len(candidates)
    out: list[_Candidate] = []
    for c in candidates:
        shared = c.terms & log_terms
        score = sum(math.log(1.0 + n / df[t]) for t in shared)
        out.append(c.with_score(round(score, 6), len(shared)))
    return out


def _title(runbook_id: str, chunks: Iterable[RunbookChunk], titles: Mapping[str, str]) -> str:
    title = (titles.get(runbook_id) or "").strip()
    if not title:
        for chunk in chunks:
            title = chunk.heading.split(">")[0].strip(" \t#")
            if title:
                break
    return SPACE_RE.sub(" ", plain_inline(title)) or runbook_id


def _render(c: _Candidate) -> str:
    label = LABELS.get(c.kind)
    first = c.text.split(" ", 1)[0].lower().strip(":,.")
    prefix = f"{label}: " if label and not first.startswith(label.lower()) else ""
    return f"{prefix}{c.text} [runbook: {c.runbook_id}]"

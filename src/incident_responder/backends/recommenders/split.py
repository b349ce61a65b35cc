"""The recommender A/B: a deterministic share of new tickets gets recommender B instead of A.

A ticket's variant is a hash of the log it was opened by (the first report's), the one thing
every recommender call about that ticket is given: the answer at opening and, with an LLM
asked afterwards, the late one (``pipeline.late_variants``) agree without storing anything, in
every replica and after a restart. Raising the share only moves tickets from A to B.

Every answer carries its ticket's arm in ``variant`` whatever wrote it (the arm's recommender,
its offline fallback or the in-process stand-in shown until an LLM answers), and keeps the
``source`` of the recommender that wrote it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence

from incident_responder.models import Recommendation, RunbookChunk
from incident_responder.ports import Recommender

__all__ = ["VARIANTS", "SplitRecommender", "VariantArm", "variant_of"]

VARIANTS = ("A", "B")
_SCALE = 2**64


def variant_of(key: str, b_share: float) -> str:
    """``"B"`` for a ``b_share`` of keys (deterministic: a hash of ``key``), else ``"A"``."""
    if b_share <= 0.0:
        return "A"
    if b_share >= 1.0:
        return "B"
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8, person=b"ir-rec-ab")
    return "B" if int.from_bytes(digest.digest(), "big") < b_share * _SCALE else "A"


class VariantArm:
    """One arm of the A/B: ``inner``, whose answers it marks with ``variant`` (its name and
    ``remote`` are the inner recommender's)."""

    def __init__(self, inner: Recommender, variant: str) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}")
        self._inner = inner
        self._variant = variant

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def remote(self) -> bool:
        return self._inner.remote

    @property
    def variant(self) -> str:
        return self._variant

    @property
    def inner(self) -> Recommender:
        return self._inner

    def recommend(
        self, log: str, chunks: Sequence[RunbookChunk], titles: Mapping[str, str]
    ) -> Recommendation | None:
        answer = self._inner.recommend(log, chunks, titles)
        return None if answer is None else answer.model_copy(update={"variant": self._variant})


class SplitRecommender:
    """Recommends with ``a`` for most logs and with ``b`` for a ``b_share`` of them (see
    :func:`variant_of`); each answer's ``variant`` says which, and ``on_answer`` hears it.

    ``name`` is A's (the recommender configured; B is the candidate), ``remote`` is true if
    either arm is remote. Errors of an arm propagate, as they would without the split.
    """

    def __init__(
        self,
        a: Recommender,
        b: Recommender,
        b_share: float,
        *,
        on_answer: Callable[[str], None] = lambda _variant: None,
    ) -> None:
        if not 0.0 <= b_share <= 1.0:
            raise ValueError("b_share must be between 0 and 1")
        self._arms = {"A": VariantArm(a, "A"), "B": VariantArm(b, "B")}
        self._b_share = b_share
        self._on_answer = on_answer

    @property
    def name(self) -> str:
        return self._arms["A"].name

    @property
    def remote(self) -> bool:
        return any(arm.remote for arm in self._arms.values())

    @property
    def b_share(self) -> float:
        return self._b_share

    @property
    def arms(self) -> Mapping[str, VariantArm]:
        """The arms by variant ("A", "B"): each marks its answers with its variant."""
        return self._arms

    def variant_of(self, log: str) -> str:
        """The arm a ticket opened by ``log`` is in."""
        return variant_of(log, self._b_share)

    def recommend(
        self, log: str, chunks: Sequence[RunbookChunk], titles: Mapping[str, str]
    ) -> Recommendation | None:
        variant = self.variant_of(log)
        answer = self._arms[variant].recommend(log, chunks, titles)
        if answer is not None:
            self._on_answer(variant)
        return answer

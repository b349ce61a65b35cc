"""The recommender A/B split: which share of tickets gets B, deterministically, and marked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from incident_responder.backends.recommenders.split import SplitRecommender, VariantArm, variant_of
from incident_responder.models import Recommendation, RunbookChunk
from incident_responder.settings import Settings

CHUNKS = [RunbookChunk(runbook_id="db", chunk_no=0, heading="Mitigation", text="1. Restart the pooler.")]
TITLES = {"db": "DB refused"}
KEYS = [
    f"2026-11-20T10:00:{i % 60:02d}Z ERROR api[{i}]: connection refused (attempt {i})" for i in range(1000)
]


class _Fixed:
    """A recommender that answers with its own name as the summary (None without chunks)."""

    def __init__(self, name: str, remote: bool = False) -> None:
        self._name = name
        self._remote = remote
        self.asked: list[str] = []

    @property
    def name(self) -> str:
        return self._name

    @property
    def remote(self) -> bool:
        return self._remote

    def recommend(
        self, log: str, chunks: Sequence[RunbookChunk], titles: Mapping[str, str]
    ) -> Recommendation | None:
        self.asked.append(log)
        if not chunks:
            return None
        return Recommendation(
            summary=self._name, steps=["x [runbook: db]"], source=self._name, runbook_ids=["db"]
        )


@pytest.mark.parametrize(("share", "expected"), [(0.0, "A"), (1.0, "B")])
def test_share_0_sends_every_ticket_to_a_and_1_every_ticket_to_b(share: float, expected: str) -> None:
    assert {variant_of(key, share) for key in KEYS} == {expected}
    split = SplitRecommender(_Fixed("a"), _Fixed("b"), share)
    answers = [split.recommend(key, CHUNKS, TITLES) for key in KEYS[:50]]
    assert {a.variant for a in answers if a is not None} == {expected}
    assert {a.source for a in answers if a is not None} == {expected.lower()}


def test_a_share_of_30_percent_sends_about_30_percent_deterministically() -> None:
    first = [variant_of(key, 0.3) for key in KEYS]
    assert first == [variant_of(key, 0.3) for key in KEYS]  # the same every time (and in every process)
    share = first.count("B") / len(KEYS)
    assert 0.25 <= share <= 0.35, share


def test_raising_the_share_only_moves_tickets_from_a_to_b() -> None:
    low = {key for key in KEYS if variant_of(key, 0.2) == "B"}
    high = {key for key in KEYS if variant_of(key, 0.6) == "B"}
    assert low < high


def test_odd_text_is_hashed_too() -> None:
    assert variant_of("lone surrogate \ud800 and \x00", 0.5) in {"A", "B"}


def test_answers_are_marked_with_their_arm_and_counted() -> None:
    a, b = _Fixed("offline-extractive"), _Fixed("llm:tiny", remote=True)
    heard: list[str] = []
    split = SplitRecommender(a, b, 0.5, on_answer=heard.append)
    assert split.name == "offline-extractive"  # A's: the configured recommender
    assert split.remote  # one arm is
    answers = {key: split.recommend(key, CHUNKS, TITLES) for key in KEYS[:200]}
    for key, answer in answers.items():
        assert answer is not None
        assert answer.variant == split.variant_of(key)
        assert answer.source == ("llm:tiny" if answer.variant == "B" else "offline-extractive")
    assert sorted(heard) == sorted(a.variant for a in answers.values() if a is not None)
    assert len(a.asked) + len(b.asked) == 200 and a.asked and b.asked
    assert split.recommend(KEYS[0], [], TITLES) is None  # nothing to ground it in: no answer, none counted
    assert len(heard) == 200


def test_an_arm_keeps_its_recommenders_name_and_refuses_other_variants() -> None:
    arm = VariantArm(_Fixed("llm:tiny", remote=True), "B")
    assert (arm.name, arm.remote, arm.variant) == ("llm:tiny", True, "B")
    with pytest.raises(ValueError):
        VariantArm(_Fixed("x"), "C")
    with pytest.raises(ValueError):
        SplitRecommender(_Fixed("a"), _Fixed("b"), 1.5)


def test_settings_refuse_an_experiment_without_a_difference_or_out_of_range() -> None:
    base: dict[str, object] = {"insecure_no_auth": True}
    with pytest.raises(ValueError, match="same recommender"):
        Settings(**base, experiment={"b_share": 0.5})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same recommender"):  # an LLM's fields do not change offline
        Settings(**base, experiment={"b_share": 0.5, "recommender_b": {"model": "other"}})  # type: ignore[arg-type]
    for share in (-0.1, 1.01, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            Settings(**base, experiment={"b_share": share, "recommender_b": {"max_steps": 3}})  # type: ignore[arg-type]
    ok = Settings(**base, experiment={"b_share": 0.3, "recommender_b": {"max_steps": 3}})  # type: ignore[arg-type]
    assert ok.experiment.running and ok.experiment.recommender_b.max_steps == 3
    assert not Settings(**base).experiment.running  # type: ignore[arg-type]
    llm = {"kind": "openai", "model": "m1"}
    Settings(**base, recommender=llm, experiment={"b_share": 1, "recommender_b": {**llm, "model": "m2"}})  # type: ignore[arg-type]

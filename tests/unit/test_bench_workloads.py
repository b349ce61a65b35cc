"""The benchmark's workload generators: deterministic, the promised shape, valid bodies."""

from __future__ import annotations

import re

import pytest
from bench.workloads import STORM_TEMPLATES, Workload, batches, storm, unique

from incident_responder.api.schemas import BatchIn, IncidentIn

# Masks the variable parts the generators fill in: every token holding a digit
# (timestamps, pids, IPs, ports, counters, hex and uuid ids, pod names).
_VARIABLE = re.compile(r"\S*\d\S*")


def _shape(line: str) -> str:
    return _VARIABLE.sub("#", line)


def _words(line: str) -> frozenset[str]:
    return frozenset(re.findall(r"[A-Za-z]+", _shape(line)))


def test_same_seed_same_lines_other_seed_other_lines() -> None:
    assert storm(300, seed=3).bodies == storm(300, seed=3).bodies
    assert unique(100, seed=3).bodies == unique(100, seed=3).bodies
    assert storm(300, seed=3).bodies != storm(300, seed=4).bodies
    assert unique(100, seed=3).bodies != unique(100, seed=4).bodies


def test_storm_repeats_fifty_templates_ninety_percent_of_the_time() -> None:
    load = storm(2_000, seed=1)
    templated = [t for t in load.template_ids if t is not None]
    assert len(load) == 2_000
    assert len(templated) / len(load) == pytest.approx(0.9, abs=0.01)
    assert len(set(templated)) == 50 == len(STORM_TEMPLATES)
    # Seen from the outside: ~90 % of the lines have a shape that was already seen.
    seen: set[str] = set()
    repeats = 0
    for line in load.texts:
        shape = _shape(line)
        repeats += shape in seen
        seen.add(shape)
    assert repeats / len(load) == pytest.approx(0.9 - 50 / 2_000, abs=0.02)


def test_storm_variable_parts_vary() -> None:
    load = storm(1_000, seed=2)
    by_template: dict[int, set[str]] = {}
    for text, template in zip(load.texts, load.template_ids, strict=True):
        if template is not None:
            by_template.setdefault(template, set()).add(text)
    counts = [sum(t == k for t in load.template_ids) for k in by_template]
    # Every repeat of a template differs from the others in its variable parts.
    assert [len(texts) for texts in by_template.values()] == counts


def test_unique_lines_differ_in_words_not_only_numbers() -> None:
    load = unique(1_000, seed=5)
    assert len({_words(text) for text in load.texts}) == len(load)
    assert len(set(load.groups)) == len(load)


def test_groups_name_the_incident_of_each_line() -> None:
    load = storm(500, seed=6)
    one_offs = sum(t is None for t in load.template_ids)
    assert len(set(load.groups)) == 50 + one_offs


@pytest.mark.parametrize("load", [storm(500, seed=8), unique(300, seed=8)], ids=["storm", "unique"])
def test_bodies_are_valid_requests_per_the_contract(load: Workload) -> None:
    for body in load.bodies:
        parsed = IncidentIn.model_validate(body)
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,100}", parsed.service)
        assert 1 <= len(parsed.log) <= 10_000
        assert body.get("severity") in (None, "critical", "high", "medium", "low")
    for chunk in batches(load.bodies, 100, 500, seed=1):
        assert 1 <= len(BatchIn.model_validate({"incidents": chunk}).incidents) <= 1_000


def test_batches_keep_order_and_sizes() -> None:
    bodies = storm(2_345, seed=9).bodies
    chunks = batches(bodies, 100, 500, seed=9)
    assert [b for chunk in chunks for b in chunk] == bodies
    assert all(100 <= len(chunk) <= 500 for chunk in chunks[:-1])
    assert 1 <= len(chunks[-1]) <= 500
    assert chunks == batches(bodies, 100, 500, seed=9)
    with pytest.raises(ValueError):
        batches(bodies, 0, 10)

"""The dedup decision rule: template likeness and choose_match tiers and tie rules."""

from __future__ import annotations

import dataclasses
import math

import pytest

from incident_responder.pipeline.matching import (
    DEFAULT_THRESHOLDS,
    MAX_DIFFERING,
    SOFT,
    Candidate,
    MatchDecision,
    MatchThresholds,
    choose_match,
    differing_tokens,
    template_similarity,
)
from incident_responder.pipeline.normalize import LogNormalizer

GET = '<ip> "GET <path> HTTP/<num>" status: <num> len: <num> time: <num>'
POST = '<ip> "POST <path> HTTP/<num>" status: <num> len: <num> time: <num>'
AUTH = "authentication failure; logname= uid=<num> euid=<num> tty=ssh ruser= rhost=<ip>"

# (name, a, b, expected similarity)
SIMILARITY_ROWS: list[tuple[str, str, str, float]] = [
    ("identical", "disk <path> full", "disk <path> full", 1.0),
    ("kinds_are_ignored", "login from <ip> failed", "login from <host> failed", 1.0),
    ("kinds_inside_tokens", "rhost=<ip> denied", "rhost=<host> denied", 1.0),
    ("one_word_of_four", "cupsd startup succeeded now", "cupsd shutdown succeeded now", 0.75),
    ("placeholder_vs_literal_is_soft", "job <num> failed", "job final failed", (2 + SOFT) / 3),
    (
        "two_identifiers_are_soft",
        "domain root<num>_data offline",
        "domain storage<num> offline",
        (2 + SOFT) / 3,
    ),
    (
        "empty_value_is_soft",
        "connection from <ip> () at <ts>",
        "connection from <ip> (<host>) at <ts>",
        (5 + SOFT) / 6,
    ),
    ("key_with_other_word_value", "tty=ssh denied", "tty=console denied", 0.5),
    ("key_without_value_vs_word", "ruser= denied", "ruser=bob denied", 0.5),
    ("different_keys", "uid=<num> ok", "gid=<num> ok", 0.5),
    ("punctuation_only_differs", "done, <num>", "done <num>", (1 + SOFT) / 2),
    (
        "two_state_words_never_match",
        "link <num> went up after <num> retries",
        "link <num> went down after <num> retries",
        0.0,
    ),
    ("state_word_values_never_match", "state='Active' on node-<num>", "state='Inactive' on node-<num>", 0.0),
    (
        "state_word_against_a_plain_word_is_a_word",
        "disk <path> is <num>% full",
        "disk <path> is <num>% used",
        0.8,
    ),
    ("extra_word_is_another_message", AUTH, AUTH + " user=<user>", 0.0),
    ("no_placeholder_no_alignment", "link up", "link up now", 0.0),
    ("list_collapses", "fan rpm ( <num> <num> <num> )", "fan rpm ( <num> )", 1.0),
    ("non_value_token_not_absorbed", "fan rpm ( <num> **** <num> )", "fan rpm ( <num> )", 0.0),
    (
        "placeholder_absorbs_identifiers",
        "nodes <num> down",
        "nodes node-<num> node-<num> rack-<num> down",
        (2 + SOFT) / 3,
    ),
    ("placeholder_does_not_absorb_words", "user <user> timed out", "user session opened for good", 0.0),
    ("both_empty", "", "", 1.0),
    ("one_empty", "", "x", 0.0),
    ("multiline_counts_tokens", "a <num>\nb", "a <num> b", 1.0),
]


@pytest.mark.parametrize(("name", "a", "b", "expected"), SIMILARITY_ROWS, ids=[r[0] for r in SIMILARITY_ROWS])
def test_template_similarity(name: str, a: str, b: str, expected: float) -> None:
    assert template_similarity(a, b) == pytest.approx(expected)
    assert template_similarity(b, a) == pytest.approx(expected)  # symmetric


def test_meaningful_one_word_differences_stay_below_default_threshold() -> None:
    t = DEFAULT_THRESHOLDS.template_similarity
    assert template_similarity(GET, POST) < t
    assert (
        template_similarity(
            "[instance: <uuid>] VM Paused (Lifecycle Event)",
            "[instance: <uuid>] VM Started (Lifecycle Event)",
        )
        < t
    )
    assert (
        template_similarity(
            "Failed none for invalid user <user> from <ip> port <num> ssh<num>",
            "Failed password for invalid user <user> from <ip> port <num> ssh<num>",
        )
        < t
    )


def test_one_unmasked_word_in_a_long_template_is_tolerated() -> None:
    long_a = "worker <num> of pool alpha finished nightly compaction of table events in region <num>"
    long_b = long_a.replace("alpha", "bravo")
    assert template_similarity(long_a, long_b) >= DEFAULT_THRESHOLDS.template_similarity


def test_similarity_from_real_normalized_lines() -> None:
    n = LogNormalizer()
    a = n.normalize("Jun  1 00:00:01 h sshd[1]: Invalid user alice from 10.0.0.1").template
    b = n.normalize("Dec 31 23:59:59 h sshd[2]: Invalid user bob from a.example.com").template
    assert template_similarity(a, b) == 1.0


# --------------------------------------------------------------------------- choose_match
TH = MatchThresholds(
    template_similarity=0.9,
    auto_merge=0.95,
    related=0.7,
    template_min_cosine=0.5,
    semantic_min_template=0.6,
    ambiguity_margin=0.02,
)
Q = "disk <path> is <num>% full on node-<num>"  # 6 tokens


def c(ticket: str, template: str, cos: float) -> Candidate:
    return Candidate(ticket_id=ticket, template=template, similarity=cos)


def test_no_candidates_opens_a_new_ticket() -> None:
    assert choose_match(Q, [], TH) == MatchDecision(
        ticket_id=None, method=None, similarity=None, template=Q, related_ticket_ids=(), report_template=Q
    )


def test_a_decision_carries_its_evidence() -> None:
    other = "disk <path> is <num>% free on node-<num>"
    d = choose_match(Q, [c("t1", other, 0.99), c("t2", Q, 0.6)], TH)
    assert (d.ticket_id, d.method, d.threshold, d.report_template) == ("t2", "template", 0.9, Q)
    assert d.differing == ()
    d = choose_match(Q, [c("t1", "disk <path> is <num>% free on node-<num> now", 0.99)], TH)
    assert d.ticket_id is None and d.related_ticket_ids == ("t1",)


def test_differing_tokens_name_both_sides() -> None:
    assert differing_tokens("a b c d", "a x c d") == ("-x", "+b")
    assert differing_tokens("a b c", "a b c") == ()
    long = " ".join(f"w{i}" for i in range(500))
    assert len(differing_tokens(long, "z " + long)) <= MAX_DIFFERING


def test_a_split_off_form_is_never_joined_and_the_next_best_is_a_correction() -> None:
    beta = "pool drained on queue beta after <num> tasks on port <num> with <num> workers in pool main"
    alpha = beta.replace("beta", "alpha")
    gamma = beta.replace("beta", "gamma")
    old = Candidate("old", alpha, 0.99, cannot_link=(beta,))
    new = Candidate("new", beta, 0.98, via="split")
    d = choose_match(gamma, [old, new], TH)
    assert (d.ticket_id, d.method, d.refused) == ("new", "correction", ("old",))
    # with nothing else to join, the refused ticket is still never joined
    d = choose_match(gamma, [old], TH)
    assert d.ticket_id is None and d.refused == ("old",)
    # a report unlike the split-off form is not refused
    unlike = "certificate for <host> expired <num> days ago on port <num> of gateway main"
    assert choose_match(unlike, [old], TH).refused == ()


def test_template_match() -> None:
    d = choose_match(Q, [c("t1", "disk <path> is <num>% full on node-<num>", 0.8)], TH)
    assert (d.ticket_id, d.method, d.similarity, d.template) == ("t1", "template", 1.0, Q)
    assert d.related_ticket_ids == ()


def test_template_match_needs_some_cosine() -> None:
    d = choose_match(Q, [c("t1", Q, 0.3)], TH)
    assert d.ticket_id is None and d.method is None


def test_semantic_match() -> None:
    other = "disk <path> is <num>% used at node-<num>"  # 4/6 positions equal -> 0.67
    d = choose_match(Q, [c("t1", other, 0.97)], TH)
    assert (d.ticket_id, d.method, d.similarity, d.template) == ("t1", "semantic", 0.97, other)


def test_semantic_match_needs_template_likeness() -> None:
    # "user=root" present vs absent: nearly the same embedding, a different template
    d = choose_match(AUTH, [c("t1", AUTH + " user=<user>", 0.99)], TH)
    assert d.ticket_id is None
    assert d.related_ticket_ids == ("t1",)


def test_semantic_match_refuses_a_coin_flip() -> None:
    other = "disk <path> is <num>% used at node-<num>"
    d = choose_match(Q, [c("t1", other, 0.97), c("t2", "volume <path> nearly full", 0.96)], TH)
    assert d.ticket_id is None and d.method is None
    assert d.related_ticket_ids == ("t1", "t2")


def test_semantic_match_with_same_ticket_close_behind_is_fine() -> None:
    other = "disk <path> is <num>% used at node-<num>"
    d = choose_match(Q, [c("t1", other, 0.97), c("t1", "volume <path> nearly full", 0.965)], TH)
    assert (d.ticket_id, d.method) == ("t1", "semantic")


def test_related_only() -> None:
    d = choose_match(
        Q,
        [c("t1", "cpu <num>% busy", 0.72), c("t2", "memory <num>% used", 0.9), c("t3", "fan <num> rpm", 0.5)],
        TH,
    )
    assert d.ticket_id is None
    assert d.related_ticket_ids == ("t2", "t1")  # by cosine, below `related` left out


def test_related_deduplicates_tickets_and_excludes_the_chosen_one() -> None:
    d = choose_match(
        Q,
        [
            c("t1", Q, 0.8),
            c("t2", "cpu <num>% busy", 0.75),
            c("t2", "memory <num>% used", 0.85),
            c("t1", "x", 0.9),
        ],
        TH,
    )
    assert d.ticket_id == "t1"
    assert d.related_ticket_ids == ("t2",)


def test_template_evidence_beats_a_higher_cosine() -> None:
    d = choose_match(Q, [c("t9", "disk <path> is <num>% used at node-<num>", 0.99), c("t1", Q, 0.6)], TH)
    assert (d.ticket_id, d.method) == ("t1", "template")
    assert d.related_ticket_ids == ("t9",)


def test_tie_on_template_likeness_goes_to_higher_cosine() -> None:
    d = choose_match(Q, [c("t1", Q, 0.7), c("t2", Q, 0.8)], TH)
    assert d.ticket_id == "t2"


def test_higher_template_likeness_wins_over_cosine() -> None:
    longer = "disk <path> is <num>% full on node-<num> now"  # one word more: 0
    almost = "disk <path> is <num>% full on rack-<num>"  # one soft position: 0.96
    d = choose_match(Q, [c("t1", almost, 0.99), c("t2", Q, 0.6), c("t3", longer, 0.99)], TH)
    assert d.ticket_id == "t2"


def test_full_tie_goes_to_the_earlier_candidate() -> None:
    d = choose_match(Q, [c("t1", Q, 0.8), c("t2", Q, 0.8)], TH)
    assert d.ticket_id == "t1"


def test_nan_similarity_is_treated_as_unrelated() -> None:
    d = choose_match(Q, [c("t1", Q, math.nan), c("t2", "x y", math.nan)], TH)
    assert d.ticket_id is None and d.related_ticket_ids == ()


def test_get_and_post_never_merge_with_defaults() -> None:
    d = choose_match(GET, [c("t1", POST, 0.9)], DEFAULT_THRESHOLDS)
    assert d.ticket_id is None


def test_default_thresholds_are_ordered() -> None:
    d = DEFAULT_THRESHOLDS
    assert 0.0 < d.related < d.auto_merge <= 1.0
    assert 0.9 < d.template_similarity <= 1.0
    assert 0.0 <= d.semantic_min_template < d.template_similarity
    assert dataclasses.replace(d, auto_merge=1.01).auto_merge > 1.0  # a semantic tier can be switched off

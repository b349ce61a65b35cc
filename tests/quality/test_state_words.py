"""State words: mask values, never the word that says what happened.

``'Active'`` / ``'Inactive'``, link up / down, register / deregister, ``"on-sleep"`` /
``"on-wake"``: two reports that differ only there are two incidents. The antonym-swap tests
swap the first state word of every report that has one (dev set and invented systems) and
require the swapped report not to get the original's fingerprint; whether the dedup decision
then still keeps it out of the original's ticket is measured too (the figures are printed at
the end of the run). The table test says, case by case, what is kept and what is masked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from incident_responder.pipeline.normalize import LogNormalizer, is_state_word
from tests.quality.conftest import FIGURES, Grouper, Report, load_dev, synthetic_reports

SECTION = "antonym swap: swapped reports that kept the original's fingerprint / ticket"
N = LogNormalizer()

# Each pair both ways; the first state word of a message is swapped, its case kept.
PAIRS = (
    ("up", "down"),
    ("active", "inactive"),
    ("enabled", "disabled"),
    ("enable", "disable"),
    ("started", "stopped"),
    ("start", "stop"),
    ("starting", "stopping"),
    ("open", "closed"),
    ("opened", "closed"),
    ("opening", "closing"),
    ("success", "failure"),
    ("succeeded", "failed"),
    ("successful", "unsuccessful"),
    ("connected", "disconnected"),
    ("connect", "disconnect"),
    ("available", "unavailable"),
    ("online", "offline"),
    ("register", "deregister"),
    ("registered", "deregistered"),
    ("on-sleep", "on-wake"),
    ("sleep", "wake"),
    ("mounted", "unmounted"),
    ("attached", "detached"),
    ("locked", "unlocked"),
    ("accepted", "rejected"),
    ("allowed", "denied"),
    ("valid", "invalid"),
    ("healthy", "unhealthy"),
    ("granted", "revoked"),
)
SWAP: dict[str, str] = {}
for _a, _b in PAIRS:
    SWAP.setdefault(_a, _b)
    SWAP.setdefault(_b, _a)
_WORD_RE = re.compile(
    r"(?<![\w-])(" + "|".join(sorted(map(re.escape, SWAP), key=len, reverse=True)) + r")(?![\w-])", re.I
)


def swap_state_word(text: str) -> str | None:
    """``text`` with its first state word replaced by its antonym (None: it has none)."""
    m = _WORD_RE.search(text)
    if m is None:
        return None
    word = m.group(1)
    other = SWAP[word.lower()]
    if word.isupper():
        other = other.upper()
    elif word[0].isupper():
        other = other[0].upper() + other[1:]
    return text[: m.start()] + other + text[m.end() :]


# --------------------------------------------------------------------------- table
# (name, input, expected template)
STATE_ROWS: list[tuple[str, str, str]] = [
    ("quoted_state_kept", "device eth3 state 'Inactive'", "device eth<num> state 'Inactive'"),
    ("quoted_state_other_case", "volume vol-7 state 'ACTIVE'", "volume vol-<num> state 'ACTIVE'"),
    (
        "double_quoted_hyphenated_state",
        'sensor 4 power event "on-wake"',
        'sensor <num> power event "on-wake"',
    ),
    ("quoted_negated_state", "pod web-2 condition 'not-ready'", "pod web-<num> condition 'not-ready'"),
    ("quoted_value_masked", "device 'eth3-bond0' state up", "device <quoted> state up"),
    ("quoted_name_masked", "unknown key 'max_conns' in config", "unknown key <quoted> in config"),
    ("key_value_state_kept", "link 3 status=down", "link <num> status=down"),
    ("key_value_quoted_state_kept", 'job 9 state="running"', 'job <num> state="running"'),
    ("key_value_number_masked", "link 3 errors=42", "link <num> errors=<num>"),
    ("escaped_quoted_state_kept", 'Component \\"offline\\" reported', 'Component \\"offline\\" reported'),
    ("escaped_quoted_value_masked", 'Component \\"disk-7\\" offline', "Component <quoted> offline"),
    ("user_followed_by_state", "user locked after 5 attempts", "user locked after <num> attempts"),
    ("user_name_masked_state_kept", "user alice deregistered", "user <user> deregistered"),
    (
        "state_word_is_not_a_logger",
        "2024-02-11 08:15:42 ERROR Disconnected: peer 10.0.0.1 reset",
        "Disconnected: peer <ip> reset",
    ),
    ("state_field_between_pipes", "2024-02-11 08:15:42|DOWN|eth0 carrier lost", "DOWN|eth<num> carrier lost"),
    ("state_field_joined_at_start", "UP|eth0|carrier ok", "UP|eth<num>|carrier ok"),
    ("unquoted_hyphenated_state", "node 7 entered on-sleep", "node <num> entered on-sleep"),
    ("state_after_address", "peer 10.0.0.9:7000 unreachable", "peer <ip>:<port> unreachable"),
    # booleans stay values (the existing contract of the "bool" rule)
    ("boolean_value_masked", "cache enabled=true", "cache enabled=<bool>"),
]


@pytest.mark.parametrize(("name", "raw", "expected"), STATE_ROWS, ids=[r[0] for r in STATE_ROWS])
def test_state_words_are_kept_and_values_masked(name: str, raw: str, expected: str) -> None:
    assert N.normalize(raw).template == expected


@pytest.mark.parametrize(
    "token",
    [
        "up",
        "'Inactive'",
        '"on-wake"',
        "deregistered",
        "Disconnected:",
        "NOT_READY",
        "unavailable,",
        "(failed)",
    ],
)
def test_is_state_word(token: str) -> None:
    assert is_state_word(token)


@pytest.mark.parametrize("token", ["alice", "eth0", "<num>", "'max_conns'", "update", "downstream", ""])
def test_is_not_state_word(token: str) -> None:
    assert not is_state_word(token)


# --------------------------------------------------------------------------- antonym swap
@dataclass
class Swapped:
    """The reports that got a state word swapped, and how many of them kept the original's
    fingerprint or would join the original's ticket."""

    name: str
    total: int = 0
    same_fingerprint: list[tuple[str, str]] = field(default_factory=list)
    same_ticket: list[tuple[str, str, str]] = field(default_factory=list)


def swap_reports(grouper: Grouper, name: str, reports: Sequence[Report]) -> Swapped:
    """Replay ``reports``; then, for each distinct template with a state word, ask where the
    swapped report would go (nothing is written)."""
    replay = grouper.replay(reports)
    out = Swapped(name)
    seen: set[tuple[str, str]] = set()
    for rep, norm, ticket in zip(reports, replay.norms, replay.tickets, strict=True):
        swapped_message = swap_state_word(rep.message)
        if swapped_message is None or (rep.service, norm.template) in seen:
            continue
        seen.add((rep.service, norm.template))
        at = rep.log.rfind(rep.message)
        log = rep.log[:at] + swapped_message + rep.log[at + len(rep.message) :]
        swapped, decision = grouper.decide(replay, rep.service, log)
        out.total += 1
        if swapped.fingerprint == norm.fingerprint:
            out.same_fingerprint.append((norm.template, swapped.template))
        if decision.ticket_id == ticket:
            # "fingerprint": the antonym's own group, which matching had merged into this ticket
            out.same_ticket.append((decision.method or "?", norm.template, swapped.template))
    FIGURES[SECTION].append(
        f"{name:<9} {out.total:4d} swapped   same fingerprint {len(out.same_fingerprint):3d}"
        f"   same ticket {len(out.same_ticket):3d}"
        + (f"  (by {', '.join(sorted({m for m, _, _ in out.same_ticket}))})" if out.same_ticket else "")
    )
    for method, before, after in out.same_ticket[:3]:
        FIGURES[SECTION].append(f"{'':<9}   {method}: {before[:60]!r} ~ {after[:60]!r}")
    return out


@pytest.fixture(scope="module")
def dev_swaps(grouper: Grouper) -> Swapped:
    return swap_reports(grouper, "dev set", load_dev())


@pytest.fixture(scope="module")
def invented_swaps(grouper: Grouper) -> Swapped:
    return swap_reports(grouper, "invented", synthetic_reports())


def test_invented_antonyms_never_share_a_fingerprint(invented_swaps: Swapped) -> None:
    assert invented_swaps.total >= 15
    assert not invented_swaps.same_fingerprint, invented_swaps.same_fingerprint[:5]


def test_dev_antonyms_never_share_a_fingerprint(dev_swaps: Swapped) -> None:
    assert dev_swaps.total >= 30
    assert not dev_swaps.same_fingerprint, dev_swaps.same_fingerprint[:5]


def test_invented_antonyms_never_join_the_original_ticket(invented_swaps: Swapped) -> None:
    assert not invented_swaps.same_ticket, invented_swaps.same_ticket[:3]


def test_dev_antonyms_never_join_the_original_ticket(dev_swaps: Swapped) -> None:
    assert not dev_swaps.same_ticket, dev_swaps.same_ticket[:3]

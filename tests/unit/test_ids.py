"""Identifiers: ULID layout in Crockford base32, time-ordered, valid by ID_PATTERN."""

from __future__ import annotations

import random

import pytest

from incident_responder.ids import crockford128, is_valid_id, new_incident_id, new_ticket_id

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def by_division(value: int) -> str:
    """The textbook encoding: 26 digits, least significant computed first."""
    digits = []
    for _ in range(26):
        value, rem = divmod(value, 32)
        digits.append(ALPHABET[rem])
    return "".join(reversed(digits))


@pytest.mark.parametrize("value", [0, 1, 31, 32, 2**80 - 1, 2**80, 2**128 - 1])
def test_edges_match_the_textbook_encoding(value: int) -> None:
    assert crockford128(value) == by_division(value)


def test_random_values_match_and_keep_their_order() -> None:
    rng = random.Random(7)
    values = sorted(rng.getrandbits(128) for _ in range(2_000))
    encoded = [crockford128(v) for v in values]
    assert encoded == [by_division(v) for v in values]
    assert encoded == sorted(encoded)  # string order is numeric order: ids sort by time


def test_new_ids_are_valid_distinct_and_prefixed() -> None:
    incidents = {new_incident_id() for _ in range(1_000)}
    assert len(incidents) == 1_000
    assert all(is_valid_id(i, "inc") and not is_valid_id(i, "tkt") for i in incidents)
    assert is_valid_id(new_ticket_id(), "tkt")
    assert not is_valid_id("inc_" + "I" * 26, "inc")  # not in the alphabet

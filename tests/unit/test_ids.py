"""Identifiers: ULID layout in Crockford base32, time-ordered, prefixed by their kind."""

from __future__ import annotations

import multiprocessing
import os
import random
import re
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection

import pytest

from incident_responder.ids import (
    RandomPool,
    crockford128,
    new_incident_id,
    new_ticket_id,
    random_bits,
)
from incident_responder.observability.request_ids import new_request_id

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
    shape = re.compile(r"(inc|tkt)_[0-9a-hjkmnp-tv-z]{26}")  # Crockford's alphabet: no i, l, o, u
    incidents = {new_incident_id() for _ in range(1_000)}
    assert len(incidents) == 1_000
    assert all(i.startswith("inc_") and shape.fullmatch(i) for i in incidents)
    ticket = new_ticket_id()
    assert ticket.startswith("tkt_") and shape.fullmatch(ticket)


def test_random_pool_hands_out_each_byte_once_and_refills() -> None:
    pool = RandomPool(block=64)
    taken = [pool.take(10) for _ in range(40)]  # 400 bytes: several blocks
    assert all(len(t) == 10 for t in taken)
    assert len(set(taken)) == 40
    assert len(pool.take(100)) == 100  # more than a block: straight from os.urandom
    assert random_bits(80) < 2**80


def test_random_pool_is_safe_across_threads() -> None:
    pool = RandomPool(block=256)
    with ThreadPoolExecutor(4) as ex:
        chunks = list(ex.map(lambda _: pool.take(16), range(4_000)))
    assert len(set(chunks)) == 4_000


def _child_take(pool: RandomPool, conn: Connection) -> None:
    conn.send(pool.take(16))
    conn.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_repeat_its_parents_random_bytes() -> None:
    pool = RandomPool()
    pool.take(16)  # the parent's pool holds a block now
    ctx = multiprocessing.get_context("fork")
    here, there = ctx.Pipe()
    child = ctx.Process(target=_child_take, args=(pool, there))
    child.start()
    from_child = here.recv()
    child.join(10)
    assert child.exitcode == 0
    assert from_child != pool.take(16)  # what the parent takes next is not what the child got


def test_request_ids_are_32_hex_digits_and_distinct() -> None:
    ids = {new_request_id() for _ in range(1_000)}
    assert len(ids) == 1_000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)

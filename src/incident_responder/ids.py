"""Identifiers: a prefix plus a time-ordered, random, URL-safe body (ULID layout)."""

from __future__ import annotations

import os
import threading
import time
import uuid

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # every 10-bit value as 2 digits
_SHIFTS = tuple(range(120, -10, -10))


def crockford128(value: int) -> str:
    """A 128-bit value as 26 Crockford base32 digits, most significant first (13 lookups of 10
    bits each: cheaper than 26 divisions, and every report gets an id)."""
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


class RandomPool:
    """Bytes from ``os.urandom`` taken a block at a time: each system call lets another thread
    take the GIL, which the event loop then waits to get back, so one call per ``block`` bytes
    instead of one per id. Thread-safe; a forked child starts with an empty pool (no id
    repeats its parent's)."""

    def __init__(self, block: int = 4096) -> None:
        self._block = block
        self._buffer = b""
        self._offset = 0
        self._lock = threading.Lock()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self.clear)

    def take(self, n: int) -> bytes:
        if n > self._block:
            return os.urandom(n)
        with self._lock:
            if self._offset + n > len(self._buffer):
                self._buffer, self._offset = os.urandom(self._block), 0
            start = self._offset
            self._offset = start + n
            return self._buffer[start : start + n]

    def clear(self) -> None:
        self._lock = threading.Lock()  # a lock held by another thread at the fork stays held
        self._buffer, self._offset = b"", 0


_RANDOM = RandomPool()


def random_bits(bits: int) -> int:
    """``bits`` random bits (a multiple of 8) from the process's pool of ``os.urandom`` bytes."""
    return int.from_bytes(_RANDOM.take(bits // 8), "big")


def _ulid() -> str:
    """48 bits of milliseconds, then 80 random bits."""
    return crockford128((time.time_ns() // 1_000_000 << 80) | random_bits(80))


def new_incident_id() -> str:
    return f"inc_{_ulid()}"


def new_ticket_id() -> str:
    return f"tkt_{_ulid()}"


def new_event_id() -> str:
    return f"evt_{_ulid()}"


def new_silence_id() -> str:
    return f"sil_{_ulid()}"


def message_id(event_id: str, channel_id: str) -> str:
    """The id of the notification of ``event_id`` to ``channel_id``: the same however often
    the event is turned into messages (so the outbox keeps one of them)."""
    return f"msg_{crockford128(uuid.uuid5(uuid.NAMESPACE_URL, f'{event_id}/{channel_id}').int)}"


def point_id(*parts: str) -> str:
    """A stable UUID for a vector point derived from its owner's ids."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)))

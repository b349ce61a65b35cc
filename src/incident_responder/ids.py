"""Identifiers: a prefix plus a time-ordered, random, URL-safe body (ULID layout)."""

from __future__ import annotations

import os
import re
import time
import uuid

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
ID_PATTERN = re.compile(r"^(inc|tkt)_[0-9a-z]{26}$")


def _ulid() -> str:
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        value, rem = divmod(value, 32)
        chars.append(_CROCKFORD[rem])
    return "".join(reversed(chars))


def new_incident_id() -> str:
    return f"inc_{_ulid()}"


def new_ticket_id() -> str:
    return f"tkt_{_ulid()}"


def is_valid_id(value: str, prefix: str) -> bool:
    return value.startswith(prefix + "_") and ID_PATTERN.match(value) is not None


def point_id(*parts: str) -> str:
    """A stable UUID for a vector point derived from its owner's ids."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)))

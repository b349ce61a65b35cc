"""The Redis client every Redis adapter shares, and how they name their keys."""

from __future__ import annotations

import hashlib

import redis


def key_name(prefix: str, key: tuple[str, ...]) -> str:
    """``prefix`` + a digest of ``key``: fixed-length names whatever the key holds."""
    return prefix + hashlib.sha256("\0".join(key).encode("utf-8")).hexdigest()[:40]


def make_client(url: str, *, timeout: float) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)

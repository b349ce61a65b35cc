"""Garbage-collector settings for a long-running server.

At ready the heap holds ~250k long-lived objects (the model's modules, pydantic
schemas, the runbook library). CPython's full collections walk all of them: in a
single-request storm (4,000 reports, 2 cores) 10 full collections took 117 ms each,
1.2 s of held GIL and a stall of every request in flight each time. ``gc.freeze()``
moves what exists at ready into a permanent generation the collector skips (full
collections then take 3-4 ms), and a higher young-generation threshold turns ~1,200
young collections per 4,000 requests into ~40: requests allocate many short-lived
objects that are gone before a collection would find them.
"""

from __future__ import annotations

import gc

import structlog

log = structlog.get_logger(__name__)


def tune_gc(*, freeze: bool, young_threshold: int) -> None:
    """Apply the settings to this process: the young-generation threshold (0 keeps
    Python's), then, with ``freeze``, collect once and freeze what survives."""
    if young_threshold > 0:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(young_threshold, older, oldest)
    if freeze:
        gc.collect()
        gc.freeze()
    log.info("gc.tuned", frozen_objects=gc.get_freeze_count(), thresholds=list(gc.get_threshold()))

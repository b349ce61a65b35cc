"""Garbage-collector settings for a long-running server.

At ready the heap holds hundreds of thousands of long-lived objects (the model's modules,
pydantic schemas, the runbook library), and CPython's full collections walk all of them
while holding the GIL: every request in flight stalls each time. ``gc.freeze()`` moves what
exists at ready into a permanent generation the collector skips, and a higher
young-generation threshold makes young collections rarer: requests allocate many
short-lived objects that are gone before a collection would find them.
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

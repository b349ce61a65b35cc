"""Running a pipeline stage: in a worker thread (blocking work never runs on the event loop),
inside its tracing span, with its time observed in ``ir_stage_seconds``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import anyio.to_thread
from opentelemetry.trace import Tracer

from incident_responder.observability.metrics import Metrics
from incident_responder.observability.tracing import stage_span

T = TypeVar("T")


class StageRunner:
    """Runs blocking stage work off the event loop, timed and traced per stage name."""

    def __init__(self, metrics: Metrics, tracer: Tracer | None = None) -> None:
        self._metrics = metrics
        self._tracer = tracer

    async def run(self, stage: str, fn: Callable[[], T]) -> T:
        """``fn()`` in a worker thread, as stage ``stage``."""
        with self.timed(stage):
            return await anyio.to_thread.run_sync(fn)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Time and trace a stage whose work the caller awaits itself."""
        started = time.perf_counter()
        try:
            with stage_span(self._tracer, stage):
                yield
        finally:
            self._metrics.stage_seconds.labels(stage).observe(time.perf_counter() - started)

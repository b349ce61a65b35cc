"""The background work of notifications: the event pump and the dispatcher, as loops.

The pump runs as soon as this process writes an event (``Wakeup``), when an event it held
back is due, and every ``full_scan`` seconds over every tenant (events other replicas wrote,
or that a crash left behind). The dispatcher runs as soon as the pump put messages, and
otherwise polls the outbox every ``poll`` seconds (retries come due on their own).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import Callable

import structlog

from incident_responder.notifications.dispatcher import Dispatcher
from incident_responder.notifications.pump import EventPump
from incident_responder.observability.metrics import Metrics
from incident_responder.pipeline.stages import StageRunner
from incident_responder.ports import Outbox

log = structlog.get_logger(__name__)


class Wakeup:
    """A signal any thread may raise for the event loop's waiter, with the tenants it concerns."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._dirty: set[str] = set()
        self._lock = threading.Lock()

    def bind(self) -> None:
        """Attach to the running event loop (call from it)."""
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def __call__(self, tenant: str = "") -> None:
        with self._lock:
            if tenant:
                self._dirty.add(tenant)
        loop, event = self._loop, self._event
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                loop.call_soon_threadsafe(event.set)

    async def wait(self, seconds: float) -> set[str]:
        """Wait for a signal (at most ``seconds``); the tenants signalled since the last wait."""
        assert self._event is not None, "bind() first"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), seconds)
        self._event.clear()
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        return dirty


async def pump_forever(
    pump: EventPump,
    *,
    tenants: Callable[[], list[str]],
    stages: StageRunner,
    events_written: Wakeup,
    messages_put: Wakeup,
    full_scan: float = 10.0,
) -> None:
    held: dict[str, float] = {}  # tenant -> when its held-back events come due (monotonic)
    next_full = 0.0
    while True:
        now = time.monotonic()
        soonest = min([next_full, *held.values()])
        dirty = await events_written.wait(max(0.0, soonest - now))
        now = time.monotonic()
        todo = dirty | {t for t, due in held.items() if due <= now}
        if now >= next_full:
            next_full = now + full_scan
            try:
                todo |= set(await stages.run("pump", tenants))
            except Exception:
                log.exception("notify.scan_failed")
        for tenant in sorted(todo):
            try:
                put, wake = await stages.run("pump", functools.partial(pump.pump, tenant))
            except Exception:
                log.exception("notify.pump_failed", tenant=tenant)
                held[tenant] = time.monotonic() + full_scan
                continue
            if put:
                messages_put()
            if wake is None:
                held.pop(tenant, None)
            else:
                held[tenant] = time.monotonic() + wake


async def dispatch_forever(dispatcher: Dispatcher, *, messages_put: Wakeup, poll: float = 1.0) -> None:
    while True:
        try:
            attempted = await dispatcher.run_once()
        except Exception:
            log.exception("notify.dispatch_failed")
            attempted = 0
        if not attempted:
            await messages_put.wait(poll)


async def tend_outbox_forever(
    outbox: Outbox, *, stages: StageRunner, metrics: Metrics, keep_sent: float, every: float = 60.0
) -> None:
    """Publish the outbox's size by state, and forget delivered messages past ``keep_sent``."""
    while True:
        try:
            counts = await stages.run("outbox", outbox.counts)
            for state, n in counts.items():
                metrics.outbox_messages.labels(state).set(n)
            await stages.run("outbox", lambda: outbox.purge(time.time() - keep_sent))
        except Exception:
            log.exception("notify.outbox_upkeep_failed")
        await asyncio.sleep(every)

"""A circuit breaker for blocking backend calls made from many threads.

Written here rather than taken from pybreaker because pybreaker 1.4 holds its lock
for the whole duration of the protected call, which would serialize every index and
store call of the process. Here the lock guards only state transitions.

closed --(fail_max consecutive retryable failures)--> open
open --(reset_timeout elapsed)--> half_open: one trial call at a time
half_open --success--> closed;  half_open --failure--> open
Only errors marked ``retryable`` (backend unavailable, timeouts) count as failures:
a bad request says nothing about the backend's health.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal, TypeVar

from incident_responder.errors import BackendUnavailable, IncidentResponderError

T = TypeVar("T")
State = Literal["closed", "open", "half_open"]
STATE_VALUES: dict[State, int] = {"closed": 0, "half_open": 1, "open": 2}


class CircuitOpen(BackendUnavailable):
    """Refused without calling the backend: its circuit is open, or half-open with a trial running."""

    code = "circuit_open"


class CircuitBreaker:
    """Stops calls to one backend after ``fail_max`` consecutive retryable failures, for
    ``reset_timeout`` s, then lets one trial call through (see the module doc)."""

    def __init__(
        self,
        name: str,
        *,
        fail_max: int = 5,
        reset_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, State], None] | None = None,
    ) -> None:
        self.name = name
        self._fail_max = fail_max
        self._reset_timeout = reset_timeout
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._trial_running = False

    @property
    def state(self) -> State:
        with self._lock:
            if self._state == "open" and self._clock() - self._opened_at >= self._reset_timeout:
                return "half_open"
            return self._state

    def _set(self, state: State) -> None:
        if state != self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(self.name, state)

    def _admit(self) -> bool:
        """Whether this call may proceed; True for a half-open trial."""
        with self._lock:
            if self._state == "open":
                if self._clock() - self._opened_at < self._reset_timeout:
                    raise CircuitOpen(f"{self.name} is unavailable (circuit open)")
                self._set("half_open")
            if self._state == "half_open":
                if self._trial_running:
                    raise CircuitOpen(f"{self.name} is unavailable (circuit half-open, trial in progress)")
                self._trial_running = True
                return True
            return False

    def admit(self) -> bool:
        """Ask to make a call: ``CircuitOpen`` if it may not; True if it is the half-open trial.
        Report its outcome with :meth:`succeeded` or :meth:`failed` (for calls that
        :meth:`call` cannot wrap, such as awaited ones)."""
        return self._admit()

    def succeeded(self, trial: bool) -> None:
        with self._lock:
            self._failures = 0
            if trial:
                self._trial_running = False
            self._set("closed")

    def failed(self, trial: bool, exc: BaseException) -> None:
        """The call failed with ``exc``: only a retryable service error counts against the backend."""
        with self._lock:
            if trial:
                self._trial_running = False
            if not isinstance(exc, IncidentResponderError):
                return
            if exc.retryable:
                self._failures += 1
                if trial or self._failures >= self._fail_max:
                    self._opened_at = self._clock()
                    self._set("open")
            elif trial:
                self._set("closed")  # the backend answered, if only to refuse
                self._failures = 0

    def call(self, fn: Callable[[], T]) -> T:
        trial = self._admit()
        try:
            result = fn()
        except BaseException as exc:
            self.failed(trial, exc)
            raise
        self.succeeded(trial)
        return result

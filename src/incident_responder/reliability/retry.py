"""Retries with exponential backoff and full jitter, only for retryable errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from incident_responder.errors import IncidentResponderError

T = TypeVar("T")


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, IncidentResponderError) and exc.retryable and exc.code != "circuit_open"


@dataclass(frozen=True)
class RetryPolicy:
    """Retries a call that failed with a retryable error (never a circuit-open refusal): at most
    ``attempts`` tries within ``deadline`` s, with jittered exponential waits up to ``max_wait``."""

    attempts: int = 3
    initial_wait: float = 0.05
    max_wait: float = 1.0
    deadline: float = 5.0  # total seconds spent retrying one call

    def run(self, fn: Callable[[], T], on_retry: Callable[[], None] | None = None) -> T:
        # The first attempt runs bare: tenacity's state machine costs GIL-held time on every
        # store and index call of every request, while almost all of them succeed at once.
        try:
            return fn()
        except Exception as exc:
            if not _retryable(exc) or self.attempts < 2:
                raise
            failed: list[Exception] = [exc]

        def attempt() -> T:
            if failed:  # tenacity's attempt 1 is the one that just failed
                raise failed.pop()
            return fn()

        retrying = Retrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self.deadline),
            wait=wait_random_exponential(multiplier=self.initial_wait, max=self.max_wait),
            before_sleep=(lambda _state: on_retry()) if on_retry else None,
            reraise=True,
        )
        return retrying(attempt)

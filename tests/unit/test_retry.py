"""RetryPolicy: the first attempt runs bare, later ones through tenacity; same outcomes."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from incident_responder.errors import BackendUnavailable, InvalidInput
from incident_responder.reliability.retry import RetryPolicy

FAST = RetryPolicy(attempts=3, initial_wait=0.001, max_wait=0.002, deadline=5.0)


def failing(times: int, exc: Exception) -> tuple[Callable[[], str], list[int]]:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise exc
        return "ok"

    return fn, calls


def test_success_first_time_calls_once_and_never_counts_a_retry() -> None:
    fn, calls = failing(0, BackendUnavailable("down"))
    retries: list[int] = []
    assert FAST.run(fn, on_retry=lambda: retries.append(1)) == "ok"
    assert (len(calls), len(retries)) == (1, 0)


def test_transient_failures_are_retried_until_success() -> None:
    fn, calls = failing(2, BackendUnavailable("down"))
    retries: list[int] = []
    assert FAST.run(fn, on_retry=lambda: retries.append(1)) == "ok"
    assert (len(calls), len(retries)) == (3, 2)


def test_persistent_failure_stops_after_the_attempts_and_reraises() -> None:
    fn, calls = failing(10, BackendUnavailable("still down"))
    with pytest.raises(BackendUnavailable, match="still down"):
        FAST.run(fn)
    assert len(calls) == 3


def test_errors_that_are_not_retryable_are_raised_at_once() -> None:
    fn, calls = failing(10, InvalidInput("bad"))
    with pytest.raises(InvalidInput):
        FAST.run(fn)
    assert len(calls) == 1


def test_one_attempt_means_no_retry() -> None:
    fn, calls = failing(1, BackendUnavailable("down"))
    with pytest.raises(BackendUnavailable):
        RetryPolicy(attempts=1).run(fn)
    assert len(calls) == 1


def test_a_failure_on_a_later_attempt_that_is_not_retryable_stops_there() -> None:
    errors: list[Exception] = [BackendUnavailable("down"), InvalidInput("bad")]
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        raise errors[len(calls) - 1]

    with pytest.raises(InvalidInput):
        FAST.run(fn)
    assert len(calls) == 2

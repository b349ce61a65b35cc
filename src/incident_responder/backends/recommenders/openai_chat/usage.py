"""The tokens an LLM billed, counted across calls."""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

_log = structlog.get_logger(__name__)


class TokenUsage:
    """Thread-safe running totals of the tokens the LLM billed, with an optional hook per call.

    ``on_usage(prompt_tokens, completion_tokens)`` is called after every answered call (outside the
    lock), e.g. to feed Prometheus counters; an exception in it is logged and otherwise ignored.
    """

    def __init__(self, on_usage: Callable[[int, int], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._prompt = 0
        self._completion = 0
        self._calls = 0
        self._on_usage = on_usage

    def add(self, prompt_tokens: int, completion_tokens: int) -> None:
        prompt_tokens, completion_tokens = max(0, prompt_tokens), max(0, completion_tokens)
        with self._lock:
            self._prompt += prompt_tokens
            self._completion += completion_tokens
            self._calls += 1
        if self._on_usage is not None:
            try:
                self._on_usage(prompt_tokens, completion_tokens)
            except Exception:
                _log.exception("llm.usage_hook_failed")

    @property
    def prompt_tokens(self) -> int:
        with self._lock:
            return self._prompt

    @property
    def completion_tokens(self) -> int:
        with self._lock:
            return self._completion

    @property
    def calls(self) -> int:
        with self._lock:
            return self._calls

"""The OpenAI SDK client, and reading a completion whatever the server put in it."""

from __future__ import annotations

import openai
from openai.types.chat import ChatCompletion

from incident_responder.errors import ConfigError

_NO_KEY = "unused"  # local servers (Ollama, vLLM, llama.cpp) ignore the key, but the SDK wants one


def make_openai_client(
    *, base_url: str | None, api_key: str | None, timeout: float, max_retries: int
) -> openai.OpenAI:
    """An ``openai.OpenAI`` client.

    Without a ``base_url`` (the OpenAI API itself) a key is required; with one, a missing key
    is replaced by a placeholder, since local servers do not check it.
    """
    if timeout <= 0:
        raise ConfigError("llm timeout must be positive")
    if max_retries < 0:
        raise ConfigError("llm max_retries must not be negative")
    key = api_key
    if not key:
        if base_url is None:
            raise ConfigError("an API key is required for the OpenAI API (set IR_RECOMMENDER__API_KEY)")
        key = _NO_KEY
    try:
        return openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout, max_retries=max_retries)
    except openai.OpenAIError as exc:  # message never holds the key
        raise ConfigError(f"cannot configure the OpenAI client: {type(exc).__name__}") from exc


def describe(exc: openai.OpenAIError) -> str:
    """The error class and HTTP status only: provider messages may echo part of the key."""
    if isinstance(exc, openai.APIStatusError):
        return f"{type(exc).__name__} (HTTP {exc.status_code})"
    return type(exc).__name__


def billed_tokens(completion: ChatCompletion) -> tuple[int, int]:
    """Billed (prompt, completion) tokens; zeros when the server does not say (some local ones)."""
    try:
        usage = completion.usage
        if usage is None:
            return 0, 0
        return int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0)
    except (AttributeError, TypeError, ValueError):
        return 0, 0


def first_answer(completion: ChatCompletion) -> tuple[str | None, str | None]:
    """The first choice's text and finish reason, tolerating bodies that only look like a completion.

    The SDK does not validate responses strictly, so a server's malformed 200 shows up here.
    """
    try:
        choice = completion.choices[0]
        content = choice.message.content
        finish = getattr(choice, "finish_reason", None)
    except (AttributeError, TypeError, IndexError, KeyError):
        return None, None
    return (content if isinstance(content, str) else None), (finish if isinstance(finish, str) else None)

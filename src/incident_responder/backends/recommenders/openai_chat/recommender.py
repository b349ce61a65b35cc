"""The recommender itself: one chat completion per new ticket, answered as strict JSON."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from incident_responder.backends.recommenders.openai_chat.answer import UNUSABLE, read_answer
from incident_responder.backends.recommenders.openai_chat.client import billed_tokens, describe, first_answer
from incident_responder.backends.recommenders.openai_chat.prompt import MIN_CHUNK_CHARS, build_prompt
from incident_responder.backends.recommenders.openai_chat.usage import TokenUsage
from incident_responder.errors import BackendError, BackendUnavailable
from incident_responder.models import Recommendation, RunbookChunk


class OpenAIChatRecommender:
    """Recommends through an OpenAI-compatible chat model, grounded in (and citing) the retrieved runbooks."""

    def __init__(
        self,
        *,
        client: openai.OpenAI,
        model: str,
        max_context_chars: int = 12000,
        max_output_tokens: int = 600,
        temperature: float = 0.0,
        usage: TokenUsage | None = None,
    ) -> None:
        if not model.strip():
            raise ValueError("model must not be empty")
        if max_context_chars < 2 * MIN_CHUNK_CHARS:
            raise ValueError(f"max_context_chars must be at least {2 * MIN_CHUNK_CHARS}")
        if max_output_tokens < 1:
            raise ValueError("max_output_tokens must be at least 1")
        if not 0.0 <= temperature <= 2.0:
            raise ValueError("temperature must be between 0 and 2")
        self._client = client
        self._model = model
        self._max_context_chars = max_context_chars
        self._max_output_tokens = max_output_tokens
        self._temperature = temperature
        self._usage = usage

    @property
    def name(self) -> str:
        return f"llm:{self._model}"

    @property
    def remote(self) -> bool:
        return True

    @property
    def usage(self) -> TokenUsage | None:
        return self._usage

    def recommend(
        self, log: str, chunks: Sequence[RunbookChunk], titles: Mapping[str, str]
    ) -> Recommendation | None:
        """Ask the model; None without chunks (nothing to ground in, no call made).

        Raises ``BackendUnavailable`` on timeouts, connection errors, 429 and 5xx, and
        ``BackendError`` on other API errors or an answer with no usable step.
        """
        if not chunks:
            return None
        prompt = build_prompt(log, chunks, titles, max_context_chars=self._max_context_chars)
        completion = self._call(prompt.messages)
        usage_in, usage_out = billed_tokens(completion)
        if self._usage is not None:
            self._usage.add(usage_in, usage_out)
        content, finish = first_answer(completion)
        return read_answer(
            content,
            finish,
            prompt.allowed,
            model=self._model,
            source=self.name,
            usage_in=usage_in,
            usage_out=usage_out,
        )

    # -- request -----------------------------------------------------------------------------

    def _call(self, messages: list[ChatCompletionMessageParam]) -> ChatCompletion:
        try:
            return self._client.chat.completions.create(
                model=self._model,
                messages=messages,
                response_format={"type": "json_object"},
                temperature=self._temperature,
                max_tokens=self._max_output_tokens,
                n=1,
            )
        except (
            openai.APITimeoutError,
            openai.APIConnectionError,
            openai.RateLimitError,
            openai.InternalServerError,
        ) as exc:
            raise BackendUnavailable(f"llm unavailable: {describe(exc)}") from exc
        except openai.OpenAIError as exc:
            raise BackendError(f"llm request failed: {describe(exc)}") from exc
        except ValueError as exc:  # a 200 whose body is not JSON
            raise BackendError(UNUSABLE) from exc

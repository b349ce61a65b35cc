"""Reading the model's answer: strict JSON, validated item by item (one bad item does not sink
the answer), steps ending with ``[runbook: <id>]`` like the offline recommender's."""

from __future__ import annotations

import json
import re
from typing import Any, Literal, TypeVar

import structlog
from pydantic import BaseModel, ValidationError, field_validator

from incident_responder.backends.recommenders.openai_chat.prompt import (
    CONTROL_RE,
    MAX_CAUSES,
    MAX_STEPS,
    SPACE_RE,
)
from incident_responder.errors import BackendError
from incident_responder.models import Recommendation

_log = structlog.get_logger(__name__)
UNUSABLE = "llm answered unusable output"
_MAX_STEP_CHARS = 600
_MAX_CAUSE_CHARS = 200
_MAX_SUMMARY_CHARS = 800
_FENCE_INFO_RE = re.compile(r"^```[a-zA-Z]*+[ \t]*+\n?")
# A trailing "[runbook: id]" citation; searched only in the text's last bracket pair.
_CITATION_RE = re.compile(r"\[runbook:[^][]*+\]", re.IGNORECASE)


class _Cause(BaseModel):
    cause: str
    confidence: Literal["certain", "possible"]
    runbook_id: str | None = None

    @field_validator("confidence", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value


class _Step(BaseModel):
    action: str
    runbook_id: str


class _Answer(BaseModel):
    """The top level; items are validated one by one so one bad item does not sink the answer."""

    summary: str | None = None
    likely_causes: list[Any] | None = None
    steps: list[Any]


def read_answer(
    content: str | None,
    finish: str | None,
    allowed: tuple[str, ...],
    *,
    model: str,
    source: str,
    usage_in: int,
    usage_out: int,
) -> Recommendation:
    """The recommendation in the model's answer, every step and cause checked: a step citing a
    runbook the model was not shown is dropped; ``BackendError`` if none is usable."""
    answer = parse_answer(content)
    if answer is None:
        _log.warning("recommend.llm.unusable", model=model, reason="malformed", finish_reason=finish)
        raise BackendError(UNUSABLE)
    rank = {runbook_id: i for i, runbook_id in enumerate(allowed)}

    steps: list[str] = []
    seen: set[str] = set()
    cited: set[str] = set()
    dropped = 0
    for raw in answer.steps:
        step = _valid(_Step, raw)
        action = _clean(_without_citation(step.action), _MAX_STEP_CHARS) if step else ""
        runbook_id = step.runbook_id.strip() if step else ""
        if not action or runbook_id not in rank:
            dropped += 1
            continue
        if action.lower() in seen or len(steps) >= MAX_STEPS:
            continue
        seen.add(action.lower())
        cited.add(runbook_id)
        steps.append(f"{action} [runbook: {runbook_id}]")
    if dropped:
        _log.warning("recommend.llm.dropped_steps", model=model, dropped=dropped, kept=len(steps))
    if not steps:
        _log.warning("recommend.llm.unusable", model=model, reason="no_valid_step", dropped=dropped)
        raise BackendError(UNUSABLE)

    causes: list[str] = []
    for raw in answer.likely_causes or ():
        cause = _valid(_Cause, raw)
        if cause is None:
            continue
        text = _clean(cause.cause, _MAX_CAUSE_CHARS).rstrip(".;,")
        pinned = cause.runbook_id.strip() if cause.runbook_id else None
        if not text or (pinned is not None and pinned not in rank):
            continue  # a cause pinned on a runbook the model was not shown is not grounded
        if pinned is not None:
            cited.add(pinned)
        if len(causes) < MAX_CAUSES:
            causes.append(f"{text} ({cause.confidence})")

    runbook_ids = sorted(cited, key=rank.__getitem__)
    summary = _clean(answer.summary or "", _MAX_SUMMARY_CHARS)
    if not summary:
        summary = "Steps below are taken from runbook" + ("s " if len(runbook_ids) > 1 else " ")
        summary += ", ".join(runbook_ids)
    if summary[-1] not in ".!?":
        summary += "."
    if causes:
        summary = f"{summary} Likely causes: {', '.join(causes)}."
    _log.debug(
        "recommend.llm",
        model=model,
        steps=len(steps),
        dropped=dropped,
        prompt_tokens=usage_in,
        completion_tokens=usage_out,
    )
    return Recommendation(summary=summary, steps=steps, source=source, runbook_ids=runbook_ids)


def parse_answer(content: str | None) -> _Answer | None:
    """The answer's JSON object, or None if there is none."""
    if not content or not content.strip():
        return None
    text = _unfenced(content.strip())  # some local models wrap JSON in a Markdown fence anyway
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    return _valid(_Answer, data)


def _unfenced(text: str) -> str:
    """``text`` without a Markdown code fence around all of it (```json ... ```)."""
    opener = _FENCE_INFO_RE.match(text)
    if opener is None or not text.endswith("```") or len(text) < opener.end() + 3:
        return text
    return text[opener.end() : -3].strip()


def _without_citation(action: str) -> str:
    """A step without the "[runbook: id]" it ends with (the id is given separately)."""
    text = action.rstrip()
    start = text.rfind("[")
    if start >= 0 and _CITATION_RE.fullmatch(text, start):
        return text[:start].rstrip()
    return action


_M = TypeVar("_M", bound=BaseModel)


def _valid(model: type[_M], raw: object) -> _M | None:
    try:
        return model.model_validate(raw)
    except ValidationError:
        return None


def _clean(text: str, limit: int) -> str:
    text = SPACE_RE.sub(" ", CONTROL_RE.sub("", text)).strip()
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip() + "…"

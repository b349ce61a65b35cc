"""What runbook retrieval reads from a report: an alert name, the meaning, the other fields.

A report may be a plain log line, an Alertmanager notification (text layout or JSON), a
logfmt line or an alert rule's summary/description: ``parse_log`` finds the alert name (it
lifts the runbook of that name to the top), the meaning text (summary and description, noise
stripped), and the remaining fields; ``query_text`` is what gets embedded for retrieval.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from incident_responder.text.terms import split_identifier

_LOGFMT_RE = re.compile(r"""(?<![\w.\-])([A-Za-z_][\w.\-]*)=("(?:[^"\\]|\\.)*"|'[^']*'|\S*)""")
_TEXT_FIELD_RE = re.compile(r"^\s*-\s*([A-Za-z_][\w.\-]*)\s*=\s?(.*)$")
# awesome-prometheus-alerts descriptions end in "VALUE = {{ $value }} LABELS = map[...]": dropped
_VALUE_TAIL_RE = re.compile(r"\bVALUE\s*+=")
_NOISE_RES = (
    re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|\s?[+-]\d{2}:?\d{2})?(?:\s+UTC)?"),
    re.compile(r"\b\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?\b"),
    re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b"),
    re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE),
    re.compile(r"\b0x[0-9a-f]+\b|\b[0-9a-f]{12,}\b", re.IGNORECASE),
    re.compile(r"^[ \t]*+\[(?:FIRING|RESOLVED)(?::\d+)?\][^\n]*+$", re.MULTILINE),
)
_MEANING_KEYS = ("summary", "description", "message", "msg")
_STATUS_LINE_RE = re.compile(r"^[ \t]*+\[(?:FIRING|RESOLVED)(?::\d+)?\](.*+)$", re.MULTILINE | re.IGNORECASE)
_STATUS_TAG_RE = re.compile(r"\[(?:FIRING|RESOLVED)(?::\d+)?\]", re.IGNORECASE)
# A CamelCase identifier: the shape of alert names ("KubePodCrashLooping")
CAMEL_IDENT_RE = re.compile(r"\b[A-Za-z][A-Za-z0-9_]*[a-z0-9][A-Z][A-Za-z0-9_]*\b")
_NAME_KEYS = ("alertname", "alert_name", "alert")
_BLANKS_RE = re.compile(r"[ \t]+")
_ALERT_NAME_RE = re.compile(r"[\w.:\-]{2,}")
_MAX_JSON_DEPTH = 16  # alert payloads nest a few levels; deeper structure is not read


@dataclass(frozen=True)
class ParsedLog:
    """What retrieval reads from a log: an alert name if any, the meaning text, the other fields."""

    alertname: str | None
    text: str
    labels: Mapping[str, str] = field(default_factory=dict)
    # Identifiers from a notification title such as "[FIRING:1] KubePodCrashLooping (...)": they only
    # count when they equal a runbook's alert name exactly.
    name_candidates: tuple[str, ...] = ()
    structured: bool = False  # an alert name or summary/description fields were found


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return value.replace('\\"', '"').replace("\\n", "\n")


def _strip_noise(text: str) -> str:
    tail = _VALUE_TAIL_RE.search(text)
    if tail is not None:
        text = text[: tail.start()]
    for pattern in _NOISE_RES:
        text = pattern.sub(" ", text)
    return _BLANKS_RE.sub(" ", text).strip()


def _walk_json(obj: Any, out: dict[str, str], depth: int = 0) -> None:
    if depth > _MAX_JSON_DEPTH:
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                out.setdefault(str(key).lower(), str(value))
            else:
                _walk_json(value, out, depth + 1)
    elif isinstance(obj, list):
        for item in obj[:5]:
            _walk_json(item, out, depth + 1)


def _fields(log: str) -> dict[str, str]:
    """Key/value pairs from a JSON payload, Alertmanager text layout or logfmt (first wins)."""
    fields: dict[str, str] = {}
    stripped = log.strip()
    if stripped.startswith("{"):
        with contextlib.suppress(ValueError, RecursionError):  # deep nesting: not an alert payload
            _walk_json(json.loads(stripped), fields)
    for line in log.splitlines():
        match = _TEXT_FIELD_RE.match(line)
        if match:
            fields.setdefault(match.group(1).lower(), match.group(2).strip())
    for match in _LOGFMT_RE.finditer(log):
        fields.setdefault(match.group(1).lower(), _unquote(match.group(2)))
    return fields


def parse_log(log: str) -> ParsedLog:
    """Extract the alert name, the meaning (summary/description) and the other fields from a log."""
    fields = _fields(log)
    alertname = next((fields[k] for k in _NAME_KEYS if fields.get(k)), None)
    if alertname is not None and not _ALERT_NAME_RE.fullmatch(alertname):
        alertname = None
    meaning = [fields[k] for k in _MEANING_KEYS if fields.get(k)]
    # Not a recognised alert layout: the whole log minus timestamps, addresses and ids.
    text = "\n".join(dict.fromkeys(_strip_noise(m) for m in meaning)) if meaning else _strip_noise(log)
    if not text:
        # A one-line notification is all title line: keep its words, drop only the tag.
        text = _strip_noise(_STATUS_TAG_RE.sub(" ", log))
    labels = {k: v for k, v in fields.items() if k not in _MEANING_KEYS}
    candidates: list[str] = [alertname] if alertname else []
    for status in _STATUS_LINE_RE.finditer(log):
        candidates.extend(CAMEL_IDENT_RE.findall(status.group(1)))
    return ParsedLog(
        alertname=alertname,
        text=text,
        labels=labels,
        name_candidates=tuple(dict.fromkeys(candidates)),
        structured=bool(alertname or meaning),
    )


def query_text(log: str, plain: str | None = None) -> str:
    """The text to embed for retrieving runbooks for ``log``: its alert name in words plus
    summary/description, noise stripped. A log in no alert layout is its own meaning: then
    ``plain`` (the log without its variable parts, as dedup embeds it) when given, so one
    embedding serves both dedup and retrieval; else the log with noise stripped."""
    parsed = parse_log(log)
    if not parsed.structured and plain:
        return plain
    parts: list[str] = []
    if parsed.alertname:
        parts.append(" ".join(split_identifier(parsed.alertname)))
    if parsed.text:
        parts.append(parsed.text)
    return ". ".join(parts) if parts else log.strip()

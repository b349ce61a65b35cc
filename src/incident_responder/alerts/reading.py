"""One source alert -> one report: its service, its log text, its labels and its identity.

The log text is a logfmt line: ``alertname=<name>``, then the labels sorted by name, then
the ``summary`` and ``description`` annotations. It leaves out what changes between two
notifications of the same alert (times, values, URLs, Grafana's ``__...__`` labels and the
configured ``ignored_labels``), so the same alert always reads the same, and dedup compares
alerts the way it compares logs (an instance or pod label differs; the template does not).
Whatever exceeds the API's limits is cut, never refused: a source drops a refused
notification for good.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

from incident_responder.alerts.payloads import SourceAlert
from incident_responder.models import AlertInfo, AlertSourceName, IncidentReport, Severity

MAX_LABELS = 50
MAX_LABEL_VALUE = 500
MAX_TITLE = 200
MAX_URL = 2_000
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_LABEL_KEY_BAD = re.compile(r"[^A-Za-z0-9._/-]")
_SERVICE_BAD = re.compile(r"[^A-Za-z0-9._-]+")
_LOGFMT_PLAIN = re.compile(r"[^\s\"=\\]+")
_MEANING = ("summary", "description")
_SEVERITIES: Mapping[str, Severity] = {
    "critical": "critical",
    "crit": "critical",
    "page": "critical",
    "p1": "critical",
    "emergency": "critical",
    "high": "high",
    "error": "high",
    "major": "high",
    "p2": "high",
    "warning": "medium",
    "warn": "medium",
    "medium": "medium",
    "minor": "medium",
    "p3": "medium",
    "low": "low",
    "info": "low",
    "informational": "low",
    "none": "low",
    "p4": "low",
    "p5": "low",
}
# The source's links kept on the ticket, by the name notifications show them under.
_LINK_FIELDS = (
    ("source", "generator_url"),
    ("silence", "silence_url"),
    ("dashboard", "dashboard_url"),
    ("panel", "panel_url"),
    ("image", "image_url"),
)


class AlertReader:
    """Reads source alerts as reports, by the operator's choice of service labels."""

    def __init__(
        self,
        *,
        service_labels: Sequence[str],
        ignored_labels: Sequence[str] = (),
        max_log_chars: int = 10_000,
    ) -> None:
        self._service_labels = tuple(service_labels)
        self._ignored = frozenset(ignored_labels)
        self._max_log = max_log_chars

    def report(
        self, alert: SourceAlert, source: AlertSourceName, *, service_labels: Sequence[str] | None = None
    ) -> IncidentReport:
        """The report of ``alert``; ``service_labels`` overrides the reader's (a tenant's policy)."""
        labels = {k: _clean(v)[:MAX_LABEL_VALUE] for k, v in alert.labels.items()}
        annotations = {k: _clean(v) for k, v in alert.annotations.items()}
        name = labels.get("alertname", "") or "alert"
        return IncidentReport(
            service=self._service(labels, service_labels or self._service_labels, source),
            log=self._log(name, labels, annotations),
            severity=_severity(labels),
            title=_title(annotations.get("summary") or name),
            labels=_report_labels(labels),
            alert=AlertInfo(
                source=source,
                fingerprint=alert.fingerprint or _fingerprint(alert.labels),
                status="resolved" if alert.status.lower() == "resolved" else "firing",
                starts_at=alert.starts_at,
                ends_at=alert.ends_at,
                links=_links(alert),
            ),
        )

    def _service(self, labels: Mapping[str, str], names: Sequence[str], source: str) -> str:
        for name in names:
            service = _SERVICE_BAD.sub("-", labels.get(name, "")).strip("-")[:100]
            if service:
                return service
        return source

    def _log(self, name: str, labels: Mapping[str, str], annotations: Mapping[str, str]) -> str:
        fields = [("alertname", name)]
        fields += [
            (k, v)
            for k, v in sorted(labels.items())
            if k != "alertname" and k not in self._ignored and not k.startswith("__")
        ]
        head = " ".join(f"{_logfmt_key(k)}={_logfmt_value(v)}" for k, v in fields)
        meaning = [f"{k}={_logfmt_value(annotations[k])}" for k in _MEANING if annotations.get(k)]
        text = " ".join([head, *meaning])
        if len(text) > self._max_log:  # the meaning goes last, so it is what is cut
            text = text[: self._max_log - 1] + "…"
        return text


def _clean(value: str) -> str:
    """Control characters (refused in reports) as spaces."""
    return _CONTROL.sub(" ", value)


def _logfmt_key(key: str) -> str:
    return _LABEL_KEY_BAD.sub("_", key)[:100] or "_"


def _logfmt_value(value: str) -> str:
    if value and _LOGFMT_PLAIN.fullmatch(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "")
    return f'"{escaped}"'


def _severity(labels: Mapping[str, str]) -> Severity | None:
    for key in ("severity", "priority", "level"):
        found = _SEVERITIES.get(labels.get(key, "").strip().lower())
        if found is not None:
            return found
    return None


def _title(text: str) -> str | None:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    if not line:
        return None
    return line if len(line) <= MAX_TITLE else line[: MAX_TITLE - 1] + "…"


def _report_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The alert's labels within the limits of a report's (the first ``MAX_LABELS`` by name)."""
    out: dict[str, str] = {}
    for key in sorted(labels):
        safe = _logfmt_key(key)
        if safe not in out:
            out[safe] = labels[key]
        if len(out) == MAX_LABELS:
            break
    return out


def _links(alert: SourceAlert) -> dict[str, str]:
    out = {name: getattr(alert, field) for name, field in _LINK_FIELDS}
    out["runbook"] = alert.annotations.get("runbook_url", "") or alert.annotations.get("runbook", "")
    return {k: v for k, v in out.items() if v.startswith(("https://", "http://")) and len(v) <= MAX_URL}


def _fingerprint(labels: Mapping[str, str]) -> str:
    """An alert's identity when the source sent none: a hash of its sorted labels."""
    text = "\x00".join(f"{k}\x01{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]

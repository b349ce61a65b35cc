"""PagerDuty: a notice as an Events API v2 alert event (``POST /v2/enqueue``).

A ticket is one PagerDuty alert: ``dedup_key`` is always the ticket id, so a regression or a
flapping notice re-triggers the same alert and a resolution resolves it. A merged ticket's
notice resolves the merged ticket's own alert (the surviving ticket keeps its own). A trigger
carries the PD-CEF payload (summary at most 1024 characters, severity one of critical, error,
warning, info); a resolve carries only ``routing_key``, ``event_action`` and ``dedup_key``
(https://developer.pagerduty.com/docs/events-api-v2/trigger-events).
"""

from __future__ import annotations

import json
from typing import Any

from incident_responder.models import Severity
from incident_responder.notifications.model import (
    PAGERDUTY_EVENTS_URL,
    Channel,
    ChannelKind,
    Notice,
    NoticeKind,
    Rendered,
)

SUMMARY_LIMIT = 1024
DEDUP_KEY_LIMIT = 255
CLIENT = "incident-responder"
ELLIPSIS = "…"

ACTIONS: dict[NoticeKind, str] = {
    "new": "trigger",
    "regression": "trigger",
    "flapping": "trigger",
    "test": "trigger",
    "resolved": "resolve",
    "merged": "resolve",
}
SEVERITIES: dict[Severity | None, str] = {
    "critical": "critical",
    "high": "error",
    "medium": "warning",
    "low": "info",
    None: "error",  # unknown: loud enough to page, below what we know is critical
}
SUMMARY_PREFIXES: dict[NoticeKind, str] = {
    "new": "[NEW]",
    "regression": "[REGRESSION]",
    "flapping": "[FLAPPING]",
    "test": "[TEST]",
    "resolved": "[RESOLVED]",
    "merged": "[MERGED]",
}
# notice.links names in the order they are attached; any other name follows, sorted.
LINK_TEXTS = {
    "source": "Source",
    "silence": "Silence",
    "dashboard": "Dashboard",
    "panel": "Panel",
    "ticket": "Ticket",
}


class PagerDutyNotifier:
    """Renders notices as PagerDuty Events API v2 events; PagerDuty signs nothing (the routing
    key in the body is the credential)."""

    @property
    def kind(self) -> ChannelKind:
        return "pagerduty"

    def render(self, channel: Channel, notice: Notice) -> Rendered:
        """Raises ValueError without ``channel.routing_key`` (channels are validated when
        stored, so this is a programming error) or with a ticket id PagerDuty would refuse."""
        if not channel.routing_key:
            raise ValueError(f"pagerduty channel {channel.channel_id} has no routing_key")
        if len(notice.ticket_id) > DEDUP_KEY_LIMIT:
            raise ValueError(f"ticket id longer than {DEDUP_KEY_LIMIT} characters: no dedup_key")
        return Rendered(
            url=channel.url or PAGERDUTY_EVENTS_URL,
            body=json.dumps(event(channel.routing_key, notice), ensure_ascii=False, separators=(",", ":")),
            headers={"Content-Type": "application/json"},
        )

    def sign(self, channel: Channel, message_id: str, body: str, timestamp: int) -> dict[str, str]:
        return {}


def event(routing_key: str, notice: Notice) -> dict[str, Any]:
    """The Events API v2 body for ``notice``."""
    action = ACTIONS[notice.kind]
    body: dict[str, Any] = {"routing_key": routing_key, "event_action": action, "dedup_key": notice.ticket_id}
    if action == "resolve":
        return body
    body["payload"] = {
        "summary": _clip(f"{SUMMARY_PREFIXES[notice.kind]} {' '.join(notice.title.split())}", SUMMARY_LIMIT),
        "source": notice.service,
        "severity": SEVERITIES[notice.severity],
        "timestamp": notice.model_dump(mode="json", include={"at"})["at"],
        "component": notice.service,
        "group": notice.tenant,
        "class": notice.kind,
        "custom_details": {
            "ticket_id": notice.ticket_id,
            "message_id": notice.message_id,
            "status": notice.status,
            "occurrences": notice.occurrences,
            "regressions": notice.regressions,
            "flapping": notice.flapping,
            "recommendation": notice.summary,
            "recommendation_source": notice.recommendation_source,
            "steps": notice.steps,
            "labels": dict(sorted(notice.labels.items())),
        },
    }
    body["client"] = CLIENT
    if notice.links.get("ticket"):
        body["client_url"] = notice.links["ticket"]
    links = _links(notice)
    if links:
        body["links"] = links
    return body


def _links(notice: Notice) -> list[dict[str, str]]:
    known = list(LINK_TEXTS)
    names = sorted(notice.links, key=lambda name: (known.index(name) if name in known else len(known), name))
    links = [{"href": notice.links[name], "text": LINK_TEXTS.get(name, name)} for name in names]
    links += [{"href": rb.url, "text": f"Runbook: {rb.title}"} for rb in notice.runbooks if rb.url]
    return [entry for entry in links if entry["href"]]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS

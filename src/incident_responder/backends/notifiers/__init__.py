"""Notifiers: one renderer per channel kind, each a pure function of (channel, notice).

``notifier_for`` is the one place a kind is mapped to its renderer."""

from __future__ import annotations

from typing import assert_never

from incident_responder.backends.notifiers.pagerduty import PagerDutyNotifier
from incident_responder.backends.notifiers.slack import SlackNotifier
from incident_responder.backends.notifiers.webhook import WebhookNotifier
from incident_responder.notifications.model import ChannelKind
from incident_responder.ports import Notifier

__all__ = ["PagerDutyNotifier", "SlackNotifier", "WebhookNotifier", "notifier_for"]


def notifier_for(kind: ChannelKind) -> Notifier:
    """The notifier that renders for channels of ``kind``."""
    match kind:
        case "slack":
            return SlackNotifier()
        case "pagerduty":
            return PagerDutyNotifier()
        case "webhook":
            return WebhookNotifier()
        case _:
            assert_never(kind)

"""Rendered notifications posted over real HTTP to the loopback receivers: what a real Slack,
PagerDuty or Standard Webhooks consumer accepts, refuses, and how failing first looks."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from incident_responder.backends.notifiers import notifier_for
from incident_responder.notifications.model import Channel, ChannelKind, Notice, NoticeKind, Rendered
from tests.receivers import PagerDutyReceiver, Receiver, SlackReceiver, WebhookReceiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ACCEPTED = {"slack": 200, "pagerduty": 202, "webhook": 204}
KINDS: tuple[ChannelKind, ...] = ("slack", "pagerduty", "webhook")


def make_notice(message_id: str = "msg_01", kind: NoticeKind = "new", **overrides: Any) -> Notice:
    values: dict[str, Any] = {
        "message_id": message_id,
        "kind": kind,
        "tenant": "acme",
        "ticket_id": "tkt_01",
        "service": "checkout",
        "title": "Pool exhausted <!channel> & more",
        "status": "open",
        "severity": "critical",
        "created_at": datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        "at": datetime(2026, 3, 1, 12, 5, tzinfo=UTC),
        "summary": "Raise the pool size.",
        "steps": ["Check metrics", "Restart worker"],
        "links": {"ticket": "https://ir.example/t/tkt_01"},
    }
    values.update(overrides)
    return Notice(**values)


def receiver_for(kind: ChannelKind, **options: Any) -> Receiver:
    if kind == "slack":
        return SlackReceiver(**options)
    if kind == "pagerduty":
        return PagerDutyReceiver(**options)
    return WebhookReceiver(SECRET, **options)


def channel_to(receiver: Receiver, kind: ChannelKind, **overrides: Any) -> Channel:
    values: dict[str, Any] = {"channel_id": f"ch-{kind}", "kind": kind, "url": receiver.url}
    values.update({"routing_key": "R" * 32} if kind == "pagerduty" else {})
    values.update({"secret": SECRET} if kind == "webhook" else {})
    values.update(overrides)
    return Channel(**values)


def deliver(
    client: httpx.Client, channel: Channel, notice: Notice, *, timestamp: int | None = None
) -> httpx.Response:
    """One attempt, as the dispatcher makes it: the rendered body byte for byte, its fixed
    headers and the headers signed for this attempt."""
    notifier = notifier_for(channel.kind)
    rendered = notifier.render(channel, notice)
    return post(client, channel, notice.message_id, rendered, timestamp=timestamp)


def post(
    client: httpx.Client,
    channel: Channel,
    message_id: str,
    rendered: Rendered,
    *,
    timestamp: int | None = None,
) -> httpx.Response:
    signed = notifier_for(channel.kind).sign(
        channel, message_id, rendered.body, int(time.time()) if timestamp is None else timestamp
    )
    return client.post(rendered.url, content=rendered.body.encode(), headers={**rendered.headers, **signed})


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as http:
        yield http


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("notice_kind", ["new", "regression", "flapping", "resolved", "merged", "test"])
def test_every_rendered_notice_is_accepted(
    client: httpx.Client, kind: ChannelKind, notice_kind: NoticeKind
) -> None:
    with receiver_for(kind) as receiver:
        notice = make_notice(kind=notice_kind, merged_into="tkt_02" if notice_kind == "merged" else None)
        answer = deliver(client, channel_to(receiver, kind), notice)
        assert answer.status_code == ACCEPTED[kind], answer.text
        [accepted] = receiver.wait_for(1)
        assert accepted.raw == notifier_for(kind).render(channel_to(receiver, kind), notice).body.encode()
        assert accepted.headers["content-type"] == "application/json"
        resolves = kind == "pagerduty" and notice_kind in ("resolved", "merged")
        assert receiver.accepted_ids() == [None if resolves else "msg_01"]


def test_slack_answers_ok_like_slack(client: httpx.Client) -> None:
    with SlackReceiver() as slack:
        answer = deliver(client, channel_to(slack, "slack"), make_notice(title="t" * 10_000))
        assert (answer.status_code, answer.text) == (200, "ok")
        assert slack.accepted[0].body["blocks"][0]["text"]["text"].endswith("…")


@pytest.mark.parametrize(
    ("name", "body", "answer"),
    [
        ("not json", None, "invalid_payload"),
        ("no text", {"blocks": [{"type": "divider"}]}, "no_text"),
        ("51 blocks", {"text": "x", "blocks": [{"type": "divider"}] * 51}, "invalid_blocks"),
        (
            "header of 151",
            {"text": "x", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}]},
            "invalid_blocks",
        ),
        (
            "mrkdwn header",
            {"text": "x", "blocks": [{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}]},
            "invalid_blocks",
        ),
        (
            "section of 3001",
            {"text": "x", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "s" * 3001}}]},
            "invalid_blocks",
        ),
    ],
)
def test_slack_refuses_what_slack_refuses(client: httpx.Client, name: str, body: Any, answer: str) -> None:
    with SlackReceiver() as slack:
        content = b"{not json" if body is None else json.dumps(body).encode()
        response = client.post(slack.url, content=content, headers={"Content-Type": "application/json"})
        assert (response.status_code, response.text) == (400, answer), name
        assert slack.accepted == [] and [a.status for a in slack.attempts] == [400]


def test_pagerduty_answers_like_the_events_api(client: httpx.Client) -> None:
    with PagerDutyReceiver() as pd:
        ch = channel_to(pd, "pagerduty")
        first = deliver(client, ch, make_notice("msg_01", "new"))
        second = deliver(client, ch, make_notice("msg_02", "resolved"))
        assert first.json() == {"status": "success", "message": "Event processed", "dedup_key": "tkt_01"}
        assert second.status_code == 202
        assert pd.accepted_events() == [("trigger", "tkt_01"), ("resolve", "tkt_01")]
        assert pd.accepted_ids() == ["msg_01", None]


@pytest.mark.parametrize(
    ("name", "change", "error"),
    [
        ("no routing key", {"routing_key": ""}, "routing_key"),
        ("unknown action", {"event_action": "escalate"}, "event_action"),
        ("no dedup key", {"dedup_key": None}, "dedup_key"),
        ("bad severity", {"payload.severity": "high"}, "payload.severity"),
        ("long summary", {"payload.summary": "s" * 1025}, "payload.summary"),
        ("no source", {"payload.source": ""}, "payload.source"),
    ],
)
def test_pagerduty_refuses_invalid_events(
    client: httpx.Client, name: str, change: dict[str, Any], error: str
) -> None:
    with PagerDutyReceiver() as pd:
        rendered = notifier_for("pagerduty").render(channel_to(pd, "pagerduty"), make_notice())
        body = json.loads(rendered.body)
        for key, value in change.items():
            target, _, field = key.rpartition(".")
            (body[target] if target else body)[field] = value
        response = client.post(pd.url, json=body)
        assert response.status_code == 400, name
        assert response.json()["status"] == "invalid event"
        assert any(error in e for e in response.json()["errors"]), response.json()
        assert pd.accepted == []


def test_pagerduty_only_listens_on_v2_enqueue(client: httpx.Client) -> None:
    with PagerDutyReceiver() as pd:
        ch = channel_to(pd, "pagerduty", url=pd.base_url + "/v1/enqueue")
        assert deliver(client, ch, make_notice()).status_code == 404


@pytest.mark.parametrize(
    ("name", "tamper"),
    [
        ("body changed", lambda r, h: (r.replace("Pool", "Pond"), h)),
        ("another message id", lambda r, h: (r, {**h, "webhook-id": "msg_other"})),
        ("signature missing", lambda r, h: (r, {k: v for k, v in h.items() if k != "webhook-signature"})),
        ("garbled signature", lambda r, h: (r, {**h, "webhook-signature": "v1"})),
    ],
)
def test_webhook_refuses_a_tampered_message(client: httpx.Client, name: str, tamper: Any) -> None:
    with WebhookReceiver(SECRET) as hook:
        ch = channel_to(hook, "webhook")
        notifier = notifier_for("webhook")
        rendered = notifier.render(ch, make_notice())
        headers = {**rendered.headers, **notifier.sign(ch, "msg_01", rendered.body, int(time.time()))}
        body, headers = tamper(rendered.body, headers)
        response = client.post(rendered.url, content=body.encode(), headers=headers)
        assert response.status_code == 401, name
        assert hook.accepted == [] and [a.status for a in hook.attempts] == [401]


@pytest.mark.parametrize(("age", "status"), [(0, 204), (240, 204), (360, 401), (3600, 401), (-3600, 401)])
def test_webhook_refuses_a_timestamp_more_than_five_minutes_off(
    client: httpx.Client, age: int, status: int
) -> None:
    with WebhookReceiver(SECRET) as hook:
        response = deliver(
            client, channel_to(hook, "webhook"), make_notice(), timestamp=int(time.time()) - age
        )
        assert response.status_code == status


@pytest.mark.parametrize(
    ("name", "secret"), [("wrong secret", "whsec_c2VjcmV0LWtleS0xMjM0NTY3ODkwMTI="), ("unsigned", None)]
)
def test_webhook_refuses_what_its_secret_did_not_sign(
    client: httpx.Client, name: str, secret: str | None
) -> None:
    with WebhookReceiver(SECRET) as hook:
        response = deliver(client, channel_to(hook, "webhook", secret=secret), make_notice())
        assert response.status_code == 401, name


def test_webhook_with_a_plain_text_secret_verifies_end_to_end(client: httpx.Client) -> None:
    with WebhookReceiver("correct horse battery staple") as hook:
        ch = channel_to(hook, "webhook", secret="correct horse battery staple")
        assert deliver(client, ch, make_notice()).status_code == 204
        assert hook.accepted_ids() == ["msg_01"]


@pytest.mark.parametrize("kind", KINDS)
def test_fail_first_answers_500_then_accepts_the_same_bytes(client: httpx.Client, kind: ChannelKind) -> None:
    with receiver_for(kind, fail_first=2) as receiver:
        ch = channel_to(receiver, kind)
        statuses = [deliver(client, ch, make_notice()).status_code for _ in range(3)]
        assert statuses == [500, 500, ACCEPTED[kind]]
        receiver.wait_for(1)
        assert [a.status for a in receiver.attempts] == [500, 500, ACCEPTED[kind]]
        assert len({a.raw for a in receiver.attempts}) == 1  # every attempt sent the same body
        assert receiver.accepted_ids() == ["msg_01"]


@pytest.mark.parametrize("kind", ["slack", "pagerduty"])
def test_throttle_answers_429_with_retry_after(client: httpx.Client, kind: ChannelKind) -> None:
    with receiver_for(kind, fail_first=2, throttle=True, retry_after=7) as receiver:
        ch = channel_to(receiver, kind)
        answers = [deliver(client, ch, make_notice()) for _ in range(3)]
        assert [a.status_code for a in answers] == [429, 429, ACCEPTED[kind]]
        assert [a.headers.get("retry-after") for a in answers] == ["7", "7", None]


def test_every_attempt_is_recorded_and_repeats_are_kept(client: httpx.Client) -> None:
    with WebhookReceiver(SECRET) as hook:
        ch = channel_to(hook, "webhook")
        for message_id in ("msg_01", "msg_02", "msg_01"):  # at least once: a redelivery
            deliver(client, ch, make_notice(message_id))
        assert [a.headers["webhook-id"] for a in hook.wait_for(3)] == ["msg_01", "msg_02", "msg_01"]
        assert hook.accepted_ids() == ["msg_01", "msg_02", "msg_01"]
        assert all(a.body["type"] == "ticket.new" for a in hook.attempts)


def test_wait_for_times_out_naming_what_arrived(client: httpx.Client) -> None:
    with SlackReceiver(fail_first=1) as slack:
        deliver(client, channel_to(slack, "slack"), make_notice())
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"0/1 accepted, attempts \[500\]"):
            slack.wait_for(1, timeout=0.2)
        assert time.monotonic() - started < 2

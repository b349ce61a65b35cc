"""The three notifiers as pure functions: what each renders, within each wire format's limits,
with user text that tries to break out of it."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from incident_responder.backends.notifiers import (
    PagerDutyNotifier,
    SlackNotifier,
    WebhookNotifier,
    notifier_for,
)
from incident_responder.models import Severity
from incident_responder.notifications.model import (
    PAGERDUTY_EVENTS_URL,
    Channel,
    ChannelKind,
    Notice,
    NoticeKind,
    RunbookLink,
)
from tests.receivers import PagerDutyReceiver, SlackReceiver

NOTICE_KINDS: tuple[NoticeKind, ...] = ("new", "regression", "flapping", "resolved", "merged", "test")
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HOSTILE = "<!channel> <https://evil.example|click me> @here & @Everyone <@U123> <#C1|x>"


def make_notice(**overrides: Any) -> Notice:
    values: dict[str, Any] = {
        "message_id": "msg_01hzy",
        "kind": "new",
        "tenant": "acme",
        "ticket_id": "tkt_01hzx",
        "service": "checkout",
        "title": "Database connection pool exhausted",
        "status": "open",
        "severity": "high",
        "occurrences": 4,
        "created_at": datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC),
        "at": datetime(2026, 3, 1, 12, 5, 30, 250000, tzinfo=UTC),
        "summary": "Raise the pool size or find the leaking connections.",
        "steps": ["Check pool metrics", "Restart the leaking worker", "Raise max_connections", "Page DBA"],
        "recommendation_source": "runbook",
        "runbooks": [
            RunbookLink(id="rb-db", title="Database pool", url="https://wiki.example/db?x=1&y=2"),
            RunbookLink(id="rb-misc", title="Misc notes"),
        ],
        "links": {
            "ticket": "https://ir.example/tickets/tkt_01hzx",
            "source": "https://prom.example/graph?g0.expr=up",
            "silence": "https://am.example/#/silences/new",
        },
        "labels": {"region": "eu-1", "env": "prod"},
    }
    values.update(overrides)
    return Notice(**values)


def channel(kind: ChannelKind, **overrides: Any) -> Channel:
    values: dict[str, Any] = {
        "channel_id": f"ch-{kind}",
        "kind": kind,
        "url": f"https://hooks.example/{kind}",
    }
    if kind == "pagerduty":
        values["routing_key"] = "R" * 32
    if kind == "webhook":
        values["secret"] = SECRET
    values.update(overrides)
    return Channel(**values)


def slack_body(notice: Notice) -> dict[str, Any]:
    rendered = SlackNotifier().render(channel("slack"), notice)
    body: dict[str, Any] = json.loads(rendered.body)
    return body


def texts(value: Any) -> list[str]:
    """Every ``text`` string anywhere in a Slack body."""
    if isinstance(value, dict):
        found = [value["text"]] if isinstance(value.get("text"), str) else []
        return found + [t for v in value.values() for t in texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in texts(v)]
    return []


def header(body: dict[str, Any]) -> str:
    text: str = body["blocks"][0]["text"]["text"]
    return text


def section_with(body: dict[str, Any], head: str) -> str:
    for block in body["blocks"]:
        if block["type"] == "section" and "text" in block and block["text"]["text"].startswith(head):
            text: str = block["text"]["text"]
            return text
    raise AssertionError(f"no section starting {head!r}")


# --- notifier_for ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "cls"),
    [("slack", SlackNotifier), ("pagerduty", PagerDutyNotifier), ("webhook", WebhookNotifier)],
)
def test_notifier_for_maps_each_kind_to_its_renderer(kind: ChannelKind, cls: type[object]) -> None:
    notifier = notifier_for(kind)
    assert isinstance(notifier, cls)
    assert notifier.kind == kind


# --- every notifier ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["slack", "pagerduty", "webhook"])
@pytest.mark.parametrize("notice_kind", NOTICE_KINDS)
def test_the_same_notice_always_renders_the_same_bytes(kind: ChannelKind, notice_kind: NoticeKind) -> None:
    notice = make_notice(kind=notice_kind, title="Ünïcödé ✓ & <b>", merged_into="tkt_other")
    twin = Notice.model_validate_json(notice.model_dump_json())
    first = notifier_for(kind).render(channel(kind), notice)
    assert first == notifier_for(kind).render(channel(kind), twin)
    assert first.headers == {"Content-Type": "application/json"}
    # compact separators and UTF-8 text rather than \u escapes
    assert first.body == json.dumps(json.loads(first.body), ensure_ascii=False, separators=(",", ":"))
    assert "Ünïcödé ✓" in first.body or (kind == "pagerduty" and notice_kind in ("resolved", "merged"))


@pytest.mark.parametrize("kind", ["slack", "pagerduty"])
def test_kinds_that_sign_nothing_add_no_headers(kind: ChannelKind) -> None:
    assert notifier_for(kind).sign(channel(kind), "msg_1", "{}", 1_700_000_000) == {}


# --- Slack -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "prefix"),
    [
        ("new", "[NEW] "),
        ("regression", "[REGRESSION] "),
        ("flapping", "[FLAPPING] "),
        ("resolved", "[RESOLVED] "),
        ("merged", "[MERGED] "),
        ("test", "[TEST] "),
    ],
)
def test_slack_header_and_fallback_name_the_notice_kind(kind: NoticeKind, prefix: str) -> None:
    body = slack_body(make_notice(kind=kind))
    assert body["blocks"][0]["type"] == "header"
    assert body["blocks"][0]["text"]["type"] == "plain_text"
    assert header(body) == prefix + "Database connection pool exhausted"
    assert body["text"] == prefix + "Database connection pool exhausted (checkout)"


@pytest.mark.parametrize(
    ("name", "title", "shown"),
    [
        ("ampersand", "a & b", "a &amp; b"),
        ("angle brackets", "x < y > z", "x &lt; y &gt; z"),
        ("an entity stays literal", "&amp;", "&amp;amp;"),
        ("link syntax", "<https://evil|click>", "&lt;https://evil|click&gt;"),
        ("special mention", "<!channel> now", "&lt;!channel&gt; now"),
        ("user mention", "<@U024BE7LH>", "&lt;@U024BE7LH&gt;"),
        ("bare @channel", "@channel look", "@\u2060channel look"),
        ("bare @here, any case", "@HeRe", "@\u2060HeRe"),
        ("bare @everyone", "hi @everyone!", "hi @\u2060everyone!"),
        ("other @ words untouched", "@channels @hereby me@example.com", "@channels @hereby me@example.com"),
        ("newlines folded in a one-line header", "disk\nfull\t now", "disk full now"),
    ],
)
def test_slack_title_is_shown_as_literal_text(name: str, title: str, shown: str) -> None:
    body = slack_body(make_notice(title=title))
    assert header(body) == f"[NEW] {shown}", name
    assert body["text"] == f"[NEW] {shown} (checkout)", name


@pytest.mark.parametrize(
    "field",
    ["title", "service", "summary", "steps", "runbook title", "link name", "tenant", "source"],
)
def test_slack_never_lets_user_text_mention_or_link(field: str) -> None:
    table: dict[str, dict[str, Any]] = {
        "title": {"title": HOSTILE},
        "service": {"service": HOSTILE},
        "summary": {"summary": HOSTILE},
        "steps": {"steps": [HOSTILE, HOSTILE]},
        "runbook title": {"runbooks": [RunbookLink(id="r", title=HOSTILE, url="https://wiki.example/r")]},
        "link name": {"links": {HOSTILE: "https://x.example/"}},
        "tenant": {"tenant": HOSTILE},
        "source": {"recommendation_source": HOSTILE},
    }
    body = slack_body(make_notice(**table[field]))
    for text in texts(body):
        assert "<!" not in text and "<@" not in text and "<#" not in text
        assert "<https://evil" not in text
        assert not re.search(r"@(channel|here|everyone)\b", text, re.IGNORECASE), text
    # the only raw "<" left are our own links, each an http(s) URL we put there
    own = re.findall(r"<([^>]*)>", json.dumps(body, ensure_ascii=False))
    assert all(re.match(r"https?://[^|]+\|", inner) for inner in own), own


def test_slack_mrkdwn_is_verbatim_so_slack_parses_nothing_itself() -> None:
    body = slack_body(make_notice())
    objects = [
        obj
        for block in body["blocks"]
        for obj in [block.get("text"), *block.get("fields", []), *block.get("elements", [])]
        if obj and obj["type"] == "mrkdwn"
    ]
    assert len(objects) > 8
    assert all(obj["verbatim"] is True for obj in objects)


@pytest.mark.parametrize(
    ("name", "title", "pattern"),
    [
        ("plain", "x" * 10_000, r"\[NEW\] x{143}…"),
        ("entities are never cut", "&" * 10_000, r"\[NEW\] (&amp;){28}…"),
        ("mentions stay neutral when cut", "@channel " * 2_000, r"\[NEW\] (@\u2060channel ){14}@\u2060c…"),
    ],
)
def test_slack_header_fits_150_characters(name: str, title: str, pattern: str) -> None:
    body = slack_body(make_notice(title=title))
    assert len(header(body)) <= 150, name
    assert re.fullmatch(pattern, header(body)), header(body)
    assert len(body["text"]) <= 300 and body["text"].endswith("…")


def test_slack_long_texts_are_cut_to_each_limit() -> None:
    long = "y" * 10_000
    body = slack_body(
        make_notice(service=long, summary=long, steps=[long] * 3, recommendation_source=long, tenant=long)
    )
    assert SlackReceiver.block_problem(body["blocks"]) is None
    assert all(len(f["text"]) <= 2000 for f in body["blocks"][1]["fields"])
    assert body["blocks"][1]["fields"][0]["text"].endswith("…")
    recommendation = section_with(body, "*Recommendation*")
    assert len(recommendation) <= 3000 and recommendation.endswith("…")
    steps = section_with(body, "*First steps*")
    assert len(steps) <= 3000 and steps.count("…") == 3
    assert all(len(e["text"]) <= 3000 for e in body["blocks"][-1]["elements"])


def test_slack_shows_only_the_first_three_nonblank_steps_numbered_and_escaped() -> None:
    body = slack_body(make_notice(steps=["  ", "drain <node>", "restart & wait", "check", "never shown"]))
    assert section_with(body, "*First steps*") == (
        "*First steps*\n1. drain &lt;node&gt;\n2. restart &amp; wait\n3. check"
    )


def test_slack_omits_the_recommendation_and_steps_when_there_are_none() -> None:
    body = slack_body(make_notice(summary=None, steps=[], runbooks=[], links={}))
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "context"]


@pytest.mark.parametrize(
    ("overrides", "facts"),
    [
        ({}, ["*Service*\ncheckout", "*Status*\nopen", "*Severity*\nhigh", "*Occurrences*\n4"]),
        (
            {"regressions": 2, "flapping": True, "severity": None},
            [
                "*Service*\ncheckout",
                "*Status*\nopen",
                "*Severity*\nunknown",
                "*Occurrences*\n4",
                "*Regressions*\n2",
                "*Flapping*\nyes",
            ],
        ),
        (
            {"kind": "merged", "status": "merged", "merged_into": "tkt_keep"},
            [
                "*Service*\ncheckout",
                "*Status*\nmerged",
                "*Severity*\nhigh",
                "*Occurrences*\n4",
                "*Merged into*\ntkt_keep",
            ],
        ),
    ],
)
def test_slack_facts_show_regressions_and_flapping_only_when_they_apply(
    overrides: dict[str, Any], facts: list[str]
) -> None:
    body = slack_body(make_notice(**overrides))
    assert [f["text"] for f in body["blocks"][1]["fields"]] == facts


@pytest.mark.parametrize(
    ("runbook", "shown"),
    [
        (RunbookLink(id="a", title="DB & pool", url="https://wiki.example/a?x=1&y=2"),
         "• <https://wiki.example/a?x=1&amp;y=2|DB &amp; pool>"),
        (RunbookLink(id="b", title="No link"), "• No link"),
        (RunbookLink(id="c", title="Script", url="javascript:alert(1)"), "• Script"),
        (RunbookLink(id="d", title="Pipe", url="https://x.example/a|b"), "• Pipe"),
        (RunbookLink(id="e", title="Space", url="https://x.example/a b"), "• Space"),
        (RunbookLink(id="f", title="Huge", url="https://x.example/" + "a" * 2000), "• Huge"),
    ],
)  # fmt: skip
def test_slack_runbooks_link_only_clean_http_urls(runbook: RunbookLink, shown: str) -> None:
    body = slack_body(make_notice(runbooks=[runbook]))
    assert section_with(body, "*Runbooks*") == f"*Runbooks*\n{shown}"


def test_slack_links_come_in_a_fixed_order_with_unknown_names_last() -> None:
    links = {"zeta": "https://z.example", "ticket": "https://t.example", "panel": "https://p.example",
             "alpha": "https://a.example", "source": "https://s.example"}  # fmt: skip
    body = slack_body(make_notice(links=links))
    assert section_with(body, "*Links*") == (
        "*Links*\n<https://s.example|Source> · <https://p.example|Panel> · <https://t.example|Ticket>"
        " · <https://a.example|alpha> · <https://z.example|zeta>"
    )


def test_slack_stays_within_its_limits_however_many_runbooks_and_links() -> None:
    runbooks = [
        RunbookLink(id=f"rb{i}", title=f"Runbook {i}", url=f"https://wiki.example/{i}") for i in range(300)
    ]
    links = {f"link{i:03}": f"https://l.example/{i}" for i in range(300)}
    body = slack_body(make_notice(runbooks=runbooks, links=links, steps=["s"] * 100))
    assert len(body["blocks"]) <= 50
    assert SlackReceiver.block_problem(body["blocks"]) is None
    shown = section_with(body, "*Runbooks*")
    assert len(shown) <= 3000
    listed = shown.count("\n• ")
    assert 0 < listed < 300 and shown.endswith(f"\n… {300 - listed} more")
    assert section_with(body, "*Links*").endswith(" more")


def test_slack_context_names_ticket_tenant_and_message() -> None:
    notice = make_notice(message_id="msg_a&b")
    body = slack_body(notice)
    context = body["blocks"][-1]
    assert context["type"] == "context"
    assert [e["text"] for e in context["elements"]] == [
        "ticket tkt_01hzx",
        "tenant acme",
        "message msg_a&amp;b",
    ]
    assert SlackReceiver.message_id(body) == "msg_a&b"


def test_slack_posts_to_the_channel_url() -> None:
    rendered = SlackNotifier().render(
        channel("slack", url="https://hooks.slack.com/services/T/B/x"), make_notice()
    )
    assert rendered.url == "https://hooks.slack.com/services/T/B/x"


# --- PagerDuty ---------------------------------------------------------------------------


def pd_body(notice: Notice, **channel_overrides: Any) -> dict[str, Any]:
    rendered = PagerDutyNotifier().render(channel("pagerduty", **channel_overrides), notice)
    body: dict[str, Any] = json.loads(rendered.body)
    return body


@pytest.mark.parametrize(
    ("severity", "expected"),
    [("critical", "critical"), ("high", "error"), ("medium", "warning"), ("low", "info"), (None, "error")],
)
def test_pagerduty_maps_severity(severity: Severity | None, expected: str) -> None:
    assert pd_body(make_notice(severity=severity))["payload"]["severity"] == expected


@pytest.mark.parametrize(
    ("kind", "action"),
    [
        ("new", "trigger"),
        ("regression", "trigger"),
        ("flapping", "trigger"),
        ("test", "trigger"),
        ("resolved", "resolve"),
        ("merged", "resolve"),
    ],
)
def test_pagerduty_event_action_and_dedup_key_follow_the_ticket(kind: NoticeKind, action: str) -> None:
    notice = make_notice(kind=kind, merged_into="tkt_survivor" if kind == "merged" else None)
    body = pd_body(notice)
    assert body["event_action"] == action
    assert body["dedup_key"] == "tkt_01hzx"  # a merged ticket resolves its own alert
    assert body["routing_key"] == "R" * 32
    assert PagerDutyReceiver.errors(body) == []
    if action == "resolve":
        assert body == {"routing_key": "R" * 32, "event_action": "resolve", "dedup_key": "tkt_01hzx"}


def test_pagerduty_trigger_carries_the_whole_payload() -> None:
    body = pd_body(make_notice(kind="regression", regressions=1, flapping=True))
    assert body == {
        "routing_key": "R" * 32,
        "event_action": "trigger",
        "dedup_key": "tkt_01hzx",
        "payload": {
            "summary": "[REGRESSION] Database connection pool exhausted",
            "source": "checkout",
            "severity": "error",
            "timestamp": "2026-03-01T12:05:30.250000Z",
            "component": "checkout",
            "group": "acme",
            "class": "regression",
            "custom_details": {
                "ticket_id": "tkt_01hzx",
                "message_id": "msg_01hzy",
                "status": "open",
                "occurrences": 4,
                "regressions": 1,
                "flapping": True,
                "recommendation": "Raise the pool size or find the leaking connections.",
                "recommendation_source": "runbook",
                "steps": [
                    "Check pool metrics",
                    "Restart the leaking worker",
                    "Raise max_connections",
                    "Page DBA",
                ],
                "labels": {"env": "prod", "region": "eu-1"},
            },
        },
        "client": "incident-responder",
        "client_url": "https://ir.example/tickets/tkt_01hzx",
        "links": [
            {"href": "https://prom.example/graph?g0.expr=up", "text": "Source"},
            {"href": "https://am.example/#/silences/new", "text": "Silence"},
            {"href": "https://ir.example/tickets/tkt_01hzx", "text": "Ticket"},
            {"href": "https://wiki.example/db?x=1&y=2", "text": "Runbook: Database pool"},
        ],
    }
    assert datetime.fromisoformat(body["payload"]["timestamp"]) == make_notice().at


def test_pagerduty_without_a_ticket_link_has_no_client_url_or_links() -> None:
    body = pd_body(make_notice(links={}, runbooks=[RunbookLink(id="r", title="No url")]))
    assert body["client"] == "incident-responder"
    assert "client_url" not in body and "links" not in body


@pytest.mark.parametrize(
    ("title", "expected_length"),
    [("t" * 10_000, 1024), ("t" * (1024 - len("[NEW] ")), 1024), ("short", len("[NEW] short"))],
)
def test_pagerduty_summary_fits_1024_characters(title: str, expected_length: int) -> None:
    summary = pd_body(make_notice(title=title))["payload"]["summary"]
    assert len(summary) == expected_length
    assert summary.endswith("…") == (len(title) + len("[NEW] ") > 1024)


@pytest.mark.parametrize(
    ("url", "expected"), [("", PAGERDUTY_EVENTS_URL), ("http://127.0.0.1:9/v2/enqueue", None)]
)
def test_pagerduty_url_defaults_to_the_events_api(url: str, expected: str | None) -> None:
    rendered = PagerDutyNotifier().render(channel("pagerduty", url=url), make_notice())
    assert rendered.url == (expected or url)


@pytest.mark.parametrize("routing_key", [None, ""])
def test_pagerduty_without_routing_key_is_a_programming_error(routing_key: str | None) -> None:
    with pytest.raises(ValueError, match="routing_key"):
        PagerDutyNotifier().render(channel("pagerduty", routing_key=routing_key), make_notice())


def test_pagerduty_refuses_a_ticket_id_too_long_for_a_dedup_key() -> None:
    with pytest.raises(ValueError, match="255"):
        PagerDutyNotifier().render(channel("pagerduty"), make_notice(ticket_id="t" * 256))


# --- Webhook -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", NOTICE_KINDS)
def test_webhook_body_is_the_standard_envelope_around_the_notice(kind: NoticeKind) -> None:
    notice = make_notice(kind=kind)
    rendered = WebhookNotifier().render(channel("webhook"), notice)
    body = json.loads(rendered.body)
    assert list(body) == ["type", "timestamp", "data"]
    assert body["type"] == f"ticket.{kind}"
    assert body["timestamp"] == "2026-03-01T12:05:30.250000Z"
    assert Notice.model_validate(body["data"]) == notice
    assert rendered.url == "https://hooks.example/webhook"


def test_webhook_signature_matches_the_spec_test_vector() -> None:
    # The reference libraries' known answer for this secret, id, timestamp and payload.
    headers = WebhookNotifier().sign(
        channel("webhook"), "msg_p5jXN8AQM9LWM0D4loKWxJek", '{"test": 2432232314}', 1614265330
    )
    assert headers == {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }


@pytest.mark.parametrize(
    ("name", "secret", "verifier"),
    [
        ("whsec_ form", SECRET, Webhook(SECRET)),
        (
            "whsec_ without padding",
            "whsec_c2VjcmV0LWtleS0xMjM0NTY3ODkwMTI",
            Webhook(b"secret-key-123456789012"),
        ),
        ("plain text: its UTF-8 bytes", "pässwörd-not-base64", Webhook("pässwörd-not-base64".encode())),
    ],
)
def test_webhook_signature_verifies_with_standardwebhooks(name: str, secret: str, verifier: Webhook) -> None:
    notifier = WebhookNotifier()
    ch = channel("webhook", secret=secret)
    rendered = notifier.render(ch, make_notice(title="Ünïcödé ✓"))
    now = int(time.time())
    headers = notifier.sign(ch, "msg_01hzy", rendered.body, now)
    assert verifier.verify(rendered.body.encode(), headers) == json.loads(rendered.body), name
    tampered = rendered.body.replace("Ünïcödé", "Unicode")
    with pytest.raises(WebhookVerificationError):
        verifier.verify(tampered.encode(), headers)
    with pytest.raises(WebhookVerificationError):
        verifier.verify(rendered.body.encode(), {**headers, "webhook-timestamp": str(now + 1)})
    with pytest.raises(WebhookVerificationError):
        verifier.verify(rendered.body.encode(), {**headers, "webhook-id": "msg_other"})


def test_webhook_signature_changes_with_each_attempt_timestamp_only() -> None:
    notifier, ch = WebhookNotifier(), channel("webhook")
    first = notifier.sign(ch, "msg_1", "{}", 1_700_000_000)
    assert first == notifier.sign(ch, "msg_1", "{}", 1_700_000_000)
    later = notifier.sign(ch, "msg_1", "{}", 1_700_000_060)
    assert later["webhook-id"] == first["webhook-id"]
    assert later["webhook-signature"] != first["webhook-signature"]


def test_webhook_without_secret_sends_id_and_timestamp_unsigned() -> None:
    headers = WebhookNotifier().sign(channel("webhook", secret=None), "msg_1", "{}", 1_700_000_000)
    assert headers == {"webhook-id": "msg_1", "webhook-timestamp": "1700000000"}


@pytest.mark.parametrize(
    ("message_id", "secret", "error"),
    [
        ("msg.1", SECRET, "contains '.'"),
        ("msg_1", "whsec_not*base64!", "not base64"),
        ("msg_1", "whsec_", "empty"),
        ("msg_1", "", "empty"),
    ],
)
def test_webhook_sign_refuses_what_would_make_a_weak_signature(
    message_id: str, secret: str, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        WebhookNotifier().sign(channel("webhook", secret=secret), message_id, "{}", 1_700_000_000)

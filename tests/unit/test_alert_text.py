"""What retrieval reads from a report: alert name, meaning text, other fields."""

from __future__ import annotations

from incident_responder.pipeline.alert_text import parse_log, query_text
from incident_responder.pipeline.runbook_index import RunbookIndex


def test_parse_log_reads_alertmanager_layouts() -> None:
    logfmt = (
        "2024-05-01T10:00:00.000Z alertmanager status=firing alertname=QueueConsumerLagging "
        'instance=10.1.2.3:9090 summary="Backlog grows." '
        'description="Group billing lags VALUE = 3 LABELS = map[a:b]"'
    )
    parsed = parse_log(logfmt)
    assert parsed.alertname == "QueueConsumerLagging"
    assert parsed.text == "Backlog grows.\nGroup billing lags"
    text = (
        "[FIRING:1] billing (prod warning)\nLabels:\n - severity = warning\nAnnotations:\n"
        " - description = Replica db-2 is unreachable.\n - summary = Replica down.\n"
        "StartsAt: 2024-01-01 00:00:00 +0000 UTC"
    )
    parsed = parse_log(text)
    assert parsed.alertname is None
    assert "Replica db-2 is unreachable." in parsed.text and "Replica down." in parsed.text
    assert parsed.labels["severity"] == "warning"


def test_query_text_drops_timestamps_and_addresses() -> None:
    lib = RunbookIndex()
    q = lib.query_text("2024-05-01T10:00:00Z host 10.0.0.7:8080 connection refused by upstream")
    assert "2024" not in q and "10.0.0.7" not in q and "connection refused by upstream" in q
    q = lib.query_text('alertname=QueueConsumerLagging summary="Backlog grows."')
    assert q == "Queue Consumer Lagging. Backlog grows."


def test_one_line_firing_notification_keeps_its_words() -> None:
    from incident_responder.pipeline.alert_text import parse_log

    parsed = parse_log("[FIRING:1] TLS certificate for api.example.com has expired")
    assert "TLS certificate" in parsed.text and "FIRING" not in parsed.text


def test_plain_log_reuses_the_dedup_text_alerts_keep_their_own() -> None:

    plain = "2026-05-01T10:00:00Z api[42]: upstream 10.0.0.7 refused connection"
    assert query_text(plain, "upstream refused connection") == "upstream refused connection"
    assert query_text(plain) == query_text(plain, None) != "upstream refused connection"
    alert = 'alertname=QueueConsumerLagging summary="Backlog grows."'
    expected = "Queue Consumer Lagging. Backlog grows."
    assert query_text(alert, "whatever dedup embeds") == query_text(alert) == expected

"""Alert sources' notifications read as reports: service, stable log text, labels, identity, links."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from incident_responder.alerts.payloads import Notification, SourceAlert
from incident_responder.alerts.reading import AlertReader
from incident_responder.alerts.signatures import verify_grafana
from incident_responder.api.schemas import IncidentIn
from incident_responder.errors import Unauthorized

FIXTURES = Path(__file__).parent.parent / "fixtures" / "alerts"
READER = AlertReader(service_labels=["service", "job", "app", "namespace", "alertname"])


def _load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())  # type: ignore[no-any-return]


def test_an_alertmanager_group_reads_as_one_report_per_alert() -> None:
    note = Notification.model_validate(_load("alertmanager_group.json"))
    firing, resolved = (READER.report(a, "alertmanager") for a in note.alerts)
    assert firing.service == "orders-consumer"  # no `service` label: `job` is next
    assert firing.severity == "critical"
    assert firing.title == "orders consumer lag is growing"
    assert firing.log == (
        "alertname=KafkaConsumerLag instance=10.2.0.14:9308 job=orders-consumer partition=3 "
        "severity=critical "
        'summary="orders consumer lag is growing" '
        'description="Consumer group orders lags 48211 messages behind on partition 3."'
    )
    assert firing.alert is not None and resolved.alert is not None
    assert (firing.alert.status, resolved.alert.status) == ("firing", "resolved")
    assert (
        firing.alert.fingerprint == "c0ffee0000000003" and firing.alert.key == "alertmanager:c0ffee0000000003"
    )
    assert firing.alert.ends_at is None  # year 1 means "not yet"
    assert (
        resolved.alert.ends_at is not None
        and resolved.alert.ends_at.isoformat() == "2026-12-03T08:04:30.500000+00:00"
    )
    assert firing.alert.links == {
        "source": "http://prometheus.example.org:9090/graph?g0.expr=kafka_consumergroup_lag+%3E+10000"
    }
    IncidentIn.model_validate(firing.model_dump(include={"service", "log", "severity", "title", "labels"}))


def test_a_grafana_notification_keeps_its_links_and_leaves_volatile_parts_out() -> None:
    note = Notification.model_validate(_load("grafana_firing.json"))
    report = READER.report(note.alerts[0], "grafana")
    assert report.service == "checkout"
    assert report.severity == "medium"
    assert "__alert_rule_uid__" not in report.log and "912.4" not in report.log and "value" not in report.log
    assert report.log.startswith("alertname=CheckoutLatencyHigh grafana_folder=payments region=eu-west-1 ")
    assert report.alert is not None
    assert report.alert.links == {
        "source": "https://grafana.example.org/alerting/grafana/f3c9e1a0/view",
        "silence": "https://grafana.example.org/alerting/silence/new?alertmanager=grafana&matcher=alertname%3DCheckoutLatencyHigh",
        "dashboard": "https://grafana.example.org/d/abcd1234",
        "panel": "https://grafana.example.org/d/abcd1234?viewPanel=7",
        "runbook": "https://wiki.example.org/runbooks/checkout-latency",
    }
    assert report.alert.starts_at is not None and report.alert.starts_at.utcoffset() is not None


def test_the_same_alert_reads_the_same_whatever_changes_between_notifications() -> None:
    raw = _load("grafana_firing.json")["alerts"][0]
    later = {**raw, "startsAt": "2026-12-03T11:00:00Z", "values": {"A": 1500.0}, "valueString": "x",
             "labels": dict(reversed(list(raw["labels"].items())))}  # fmt: skip
    first = READER.report(SourceAlert.model_validate(raw), "grafana")
    second = READER.report(SourceAlert.model_validate(later), "grafana")
    assert first.log == second.log and first.labels == second.labels


@pytest.mark.parametrize(
    ("labels", "service_labels", "expected"),
    [
        ({"service": "api", "job": "node"}, None, "api"),
        ({"job": "node", "namespace": "prod"}, None, "node"),
        ({"app": "web/front end"}, None, "web-front-end"),  # made a valid service name
        ({"alertname": "Watchdog"}, None, "Watchdog"),
        ({}, None, "alertmanager"),  # nothing names it: the source
        ({"team": "db", "service": "api"}, ["team"], "db"),  # a tenant's own choice
        ({"service": "🙂"}, None, "alertmanager"),  # nothing usable left: next label, then the source
    ],
)
def test_the_service_is_the_first_configured_label_present(
    labels: dict[str, str], service_labels: list[str] | None, expected: str
) -> None:
    alert = SourceAlert.model_validate({"labels": labels})
    assert READER.report(alert, "alertmanager", service_labels=service_labels).service == expected


def test_oversized_and_odd_alerts_are_cut_to_the_limits_never_refused() -> None:
    alert = SourceAlert.model_validate(
        {
            "labels": {f"label {i}": "v" * 1_000 for i in range(80)} | {"alertname": "Big\x07Alert"},
            "annotations": {"summary": "s" * 500, "description": "d\x00" * 20_000},
            "startsAt": "not a time",
            "fingerprint": "",
        }
    )
    report = AlertReader(service_labels=["service"], max_log_chars=10_000).report(alert, "grafana")
    assert len(report.log) == 10_000 and report.log.endswith("…")
    assert len(report.labels) == 50 and all(len(v) <= 500 for v in report.labels.values())
    assert report.title is not None and len(report.title) == 200
    assert report.alert is not None and report.alert.starts_at is None
    assert len(report.alert.fingerprint) == 16  # none sent: one made from its labels
    IncidentIn.model_validate(report.model_dump(include={"service", "log", "severity", "title", "labels"}))


def test_scalar_values_are_read_as_text_and_structures_are_refused() -> None:
    alert = SourceAlert.model_validate({"labels": {"code": 500, "ok": False, "none": None}})
    assert alert.labels == {"code": "500", "ok": "false", "none": ""}
    with pytest.raises(ValidationError):
        SourceAlert.model_validate({"labels": {"nested": {"a": 1}}})
    with pytest.raises(ValidationError):
        Notification.model_validate({"alerts": "none"})


def test_non_http_links_are_dropped() -> None:
    alert = SourceAlert.model_validate(
        {"generatorURL": "javascript:alert(1)", "annotations": {"runbook_url": "file:///etc/passwd"}}
    )
    report = READER.report(alert, "alertmanager")
    assert report.alert is not None and report.alert.links == {}


SECRET = "grafana-signing-secret"
BODY = b'{"alerts":[]}'


def _sign(body: bytes, stamp: str | None = None) -> str:
    signed = body if stamp is None else stamp.encode() + b":" + body
    return hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()


def test_grafana_signatures_over_the_body() -> None:
    headers = {"x-grafana-alerting-signature": _sign(BODY)}
    verify_grafana(BODY, headers, secret=SECRET, signature_header="X-Grafana-Alerting-Signature")
    for bad in ({}, {"x-grafana-alerting-signature": _sign(b"{}")}, {"x-grafana-alerting-signature": "zz"}):
        with pytest.raises(Unauthorized):
            verify_grafana(BODY, bad, secret=SECRET, signature_header="X-Grafana-Alerting-Signature")


def test_grafana_signatures_with_a_timestamp_refuse_replays() -> None:
    now = 1_800_000_000.0
    stamp = str(int(now))
    headers = {"x-sig": _sign(BODY, stamp), "x-ts": stamp}
    verify_grafana(
        BODY, headers, secret=SECRET, signature_header="X-Sig", timestamp_header="X-Ts", clock=lambda: now
    )
    with pytest.raises(Unauthorized):  # ten minutes later: a replay
        verify_grafana(
            BODY,
            headers,
            secret=SECRET,
            signature_header="X-Sig",
            timestamp_header="X-Ts",
            clock=lambda: now + 600,
        )
    with pytest.raises(Unauthorized):  # the signature covers the timestamp
        verify_grafana(
            BODY, {**headers, "x-ts": str(int(now) + 1)}, secret=SECRET, signature_header="X-Sig",
            timestamp_header="X-Ts", clock=lambda: now,
        )  # fmt: skip

"""End to end: a real Alertmanager -> incident-responder (a real server process) -> Slack,
PagerDuty and a signed webhook (real HTTP receivers on loopback).

Alerts are posted to Alertmanager's API; it notifies our webhook endpoint with bearer auth on
its own schedule (grouping, repeats every second, resolutions). Each step waits for what the
receivers must get, and then checks that nothing else arrived. The figures of the run are
printed at the end of the session.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.alertmanager import Alertmanager, make_alert, require_alertmanager, resolve
from tests.e2e.conftest import FIGURES
from tests.receivers import PagerDutyReceiver, SlackReceiver, WebhookReceiver
from tests.servers import ServeProcess

TOKEN = "acme-key-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServeProcess]:
    env = {
        "IR_API_KEYS": f"acme:{TOKEN}",
        "IR_NOTIFICATIONS__ALLOW_PRIVATE_TARGETS": "true",
        "IR_NOTIFICATIONS__UPDATE_INTERVAL": "0",
        "IR_NOTIFICATIONS__RETRY_BASE": "0.1",
    }
    process = ServeProcess(tmp_path / "data", env).start()
    yield process
    process.stop()


def _until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def _metric(http: httpx.Client, name: str, **labels: str) -> float:
    text = http.get("/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _kinds(hook: WebhookReceiver) -> list[str]:
    return [a.body["type"] for a in hook.accepted]


def test_alertmanager_pages_slack_pagerduty_and_a_webhook(server: ServeProcess) -> None:
    require_alertmanager()
    with (
        SlackReceiver() as slack,
        PagerDutyReceiver() as pd,
        WebhookReceiver(SECRET, fail_first=2) as hook,
        httpx.Client(base_url=server.url, headers=AUTH, timeout=10) as http,
    ):
        for cid, body in (
            ("slack", {"kind": "slack", "url": slack.url}),
            ("pd", {"kind": "pagerduty", "url": pd.url, "routing_key": "R0UT1NGK3Y00000000000000000000AB"}),
            ("hook", {"kind": "webhook", "url": hook.url, "secret": SECRET}),
        ):
            assert http.put(f"/v1/notifications/channels/{cid}", json=body).status_code == 201
        started = datetime.now(UTC) - timedelta(seconds=5)
        disk = [
            make_alert(
                {"alertname": "DiskFull", "instance": f"db-{n}", "job": "postgres", "severity": "critical"},
                {"summary": f"disk almost full on db-{n}", "runbook_url": "https://rb.example/disk-full"},
                starts_at=started,
                generator_url="http://prometheus.example:9090/graph?g0.expr=disk",
            )
            for n in (1, 2)
        ]
        latency = make_alert(
            {"alertname": "HighLatency", "job": "checkout", "severity": "warning"},
            {"summary": "checkout p99 above 2s"},
            starts_at=started,
        )
        posted = 0
        with Alertmanager(f"{server.url}/v1/alerts/alertmanager", bearer_token=TOKEN) as am:
            am.post_alerts([*disk, latency])
            posted += 3
            # Two groups (by alertname): two tickets, each announced once on every channel.
            first_wait = _until(
                lambda: len(hook.accepted) == 2 and len(slack.accepted) == 2, "two new tickets"
            )
            _until(lambda: len(pd.accepted) == 2, "two PagerDuty triggers")
            triggers = dict((key, action) for action, key in pd.accepted_events())
            assert set(triggers.values()) == {"trigger"} and len(triggers) == 2
            disk_ticket = next(
                a.body["data"]["ticket_id"] for a in hook.accepted if a.body["data"]["service"] == "postgres"
            )
            ticket = http.get(f"/v1/tickets/{disk_ticket}").json()
            assert (
                len(ticket["source_alerts"]) == 2
                and ticket["links"]["runbook"] == "https://rb.example/disk-full"
            )
            assert ticket["links"]["source"].startswith("http://prometheus.example:9090")

            # Repeat notifications (every ~1 s) add nothing and notify nobody.
            route = "/v1/alerts/alertmanager"
            before = _metric(http, "ir_http_requests_total", route=route)
            _until(lambda: _metric(http, "ir_http_requests_total", route=route) >= before + 2, "repeats")
            assert http.get(f"/v1/tickets/{disk_ticket}").json()["occurrences"] == 2
            assert (len(slack.accepted), len(pd.accepted), len(hook.accepted)) == (2, 2, 2)

            # One of the two disk alerts resolves: the group still fires, the ticket stays open.
            am.post_alerts([resolve(disk[0])])
            posted += 1

            def first_resolved() -> bool:
                return bool(
                    http.get(f"/v1/tickets/{disk_ticket}").json()["source_alerts"][0]["status"] == "resolved"
                )

            _until(first_resolved, "the first alert's resolution")
            assert http.get(f"/v1/tickets/{disk_ticket}").json()["status"] == "open"
            # The second resolves too: the ticket resolves, PagerDuty's incident with it.
            resolved_at = datetime.now(UTC)
            am.post_alerts([resolve(disk[1], resolved_at)])
            posted += 1
            _until(lambda: ("resolve", disk_ticket) in pd.accepted_events(), "PagerDuty resolve")
            _until(lambda: _kinds(hook).count("ticket.resolved") == 1, "the webhook's resolved")
            assert http.get(f"/v1/tickets/{disk_ticket}").json()["status"] == "resolved"

            # It fires again right away: flapping. Slack and the webhook hear it; PagerDuty
            # (new, regression, resolved by default) is not paged again.
            again = make_alert(
                disk[1]["labels"], disk[1]["annotations"], starts_at=resolved_at + timedelta(seconds=1)
            )
            am.post_alerts([again])
            posted += 1
            _until(lambda: "ticket.flapping" in _kinds(hook), "the webhook's flapping")
            _until(lambda: any("[FLAPPING]" in a.body["text"] for a in slack.accepted), "Slack's flapping")
            ticket = http.get(f"/v1/tickets/{disk_ticket}").json()
            assert ticket["status"] == "open" and ticket["flapping"] is True
            time.sleep(0.5)
            assert [a for a, k in pd.accepted_events() if k == disk_ticket] == ["trigger", "resolve"]

            webhooks = _metric(http, "ir_http_requests_total", route="/v1/alerts/alertmanager", code="200")
        tickets = http.get("/v1/tickets").json()["tickets"]
        FIGURES.update(
            {
                "alerts posted to Alertmanager": posted,
                "Alertmanager webhooks answered 200": int(webhooks),
                "tickets": len(tickets),
                "Slack messages delivered": len(slack.accepted),
                "PagerDuty events delivered": len(pd.accepted),
                "webhook messages delivered": len(hook.accepted),
                "webhook attempts (2 failed on purpose)": len(hook.attempts),
                "first page after the alerts were posted (s)": round(first_wait, 2),
            }
        )
        assert len(tickets) == 2
        # every webhook message once, by id, though the first two attempts failed
        ids = hook.accepted_ids()
        assert len(ids) == len(set(ids)) == len(hook.accepted)
        assert len(hook.attempts) == len(hook.accepted) + 2


def test_a_grafana_payload_with_a_signature(server: ServeProcess) -> None:
    """Grafana cannot run here: its documented webhook body (a fixture written for these tests),
    signed as Grafana signs it, over real HTTP."""
    import hashlib
    import hmac

    body = (Path(__file__).parent.parent / "fixtures" / "alerts" / "grafana_firing.json").read_bytes()
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=10) as http:
        assert http.put("/v1/policy", json={"grafana_secret": "grafana-signing-secret"}).status_code == 200
        headers = {"Content-Type": "application/json"}
        assert http.post("/v1/alerts/grafana", content=body, headers=headers).status_code == 401
        signature = hmac.new(b"grafana-signing-secret", body, hashlib.sha256).hexdigest()
        r = http.post(
            "/v1/alerts/grafana", content=body, headers={**headers, "X-Grafana-Alerting-Signature": signature}
        )
        assert r.status_code == 200, r.text
        results: list[dict[str, Any]] = r.json()["results"]
        assert [x["status"] for x in results] == ["new", "resolved"]

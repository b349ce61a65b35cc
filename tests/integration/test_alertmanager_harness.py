"""The Alertmanager harness (tests/alertmanager.py) against a real Alertmanager and a tiny loopback
webhook receiver: what a real Alertmanager 0.25 sends to ``POST /v1/alerts/alertmanager``, and when.

Each test uses its own alertname, so its group (``group_by: [alertname]``) is its own in the one
Alertmanager this module shares. Skipped where the binary is missing (``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.alertmanager import (
    DEFAULT_GROUP_INTERVAL,
    DEFAULT_REPEAT_INTERVAL,
    RECEIVER_NAME,
    ZERO_TIME,
    Alertmanager,
    duration,
    make_alert,
    require_alertmanager,
    resolve,
    seconds,
)

TOKEN = "am-webhook-token-123"
PATH = "/v1/alerts/alertmanager"
GROUP_INTERVAL = seconds(DEFAULT_GROUP_INTERVAL)
REPEAT_INTERVAL = seconds(DEFAULT_REPEAT_INTERVAL)
# Generous: a delivery is due within one group_interval of its cause (plus a repeat_interval).
WAIT = 10.0
FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")


@dataclass(frozen=True)
class Delivery:
    at: float  # time.perf_counter() on arrival
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class Receiver:
    """A webhook receiver on 127.0.0.1 that records every POST and answers 200."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                delivery = Delivery(time.perf_counter(), self.path, dict(self.headers), json.loads(body))
                with receiver._changed:
                    receiver.deliveries.append(delivery)
                    receiver._changed.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{PATH}"

    def of_group(self, alertname: str) -> list[Delivery]:
        with self._changed:
            return [d for d in self.deliveries if d.body.get("groupLabels", {}).get("alertname") == alertname]

    def wait_for(
        self, alertname: str, predicate: Callable[[Delivery], bool], *, after: int = 0, timeout: float = WAIT
    ) -> tuple[int, Delivery]:
        """The first delivery for ``alertname``'s group, from index ``after`` on, that satisfies
        ``predicate``, and its index; fails after ``timeout`` s with what did arrive."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                group = self.of_group(alertname)
                for index in range(after, len(group)):
                    if predicate(group[index]):
                        return index, group[index]
                left = deadline - time.monotonic()
                if left <= 0:
                    bodies = json.dumps([d.body for d in group], indent=1)
                    pytest.fail(f"no matching delivery for {alertname} in {timeout}s; got:\n{bodies}")
                self._changed.wait(left)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def alertmanager(receiver: Receiver) -> Iterator[Alertmanager]:
    require_alertmanager()
    with Alertmanager(receiver.url, bearer_token=TOKEN) as am:
        print(f"\n[alertmanager {Alertmanager.version()}] ready in {am.ready_seconds:.3f}s")
        yield am


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _alerts_by_instance(delivery: Delivery) -> dict[str, dict[str, Any]]:
    return {a["labels"]["instance"]: a for a in delivery.body["alerts"]}


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _report(step: str, took: float) -> None:
    print(f"[alertmanager timing] {step}: {took:.3f}s")


def test_a_firing_alert_reaches_the_receiver_as_a_version_4_webhook(
    alertmanager: Alertmanager, receiver: Receiver
) -> None:
    name = _name("HarnessFiring")
    alert = make_alert(
        {"alertname": name, "instance": "db-1", "severity": "critical"},
        {"summary": "disk full on db-1", "runbook": "disk-full"},
        generator_url="http://prometheus.test/graph?g0.expr=up",
    )
    posted = time.perf_counter()
    alertmanager.post_alerts([alert])
    _, delivery = receiver.wait_for(name, lambda d: True)
    _report("post firing -> first webhook", delivery.at - posted)

    assert delivery.path == PATH
    assert delivery.headers["Authorization"] == f"Bearer {TOKEN}"
    assert delivery.headers["Content-Type"] == "application/json"
    assert delivery.headers["User-Agent"].startswith("Alertmanager/")
    body = delivery.body
    assert body["version"] == "4"
    assert body["status"] == "firing"
    assert body["receiver"] == RECEIVER_NAME
    assert body["groupLabels"] == {"alertname": name}
    assert body["commonLabels"] == alert["labels"]
    assert body["commonAnnotations"] == alert["annotations"]
    assert body["groupKey"] == f'{{}}:{{alertname="{name}"}}'
    assert body["externalURL"] == alertmanager.url
    assert body["truncatedAlerts"] == 0
    [sent] = body["alerts"]
    assert sent["status"] == "firing"
    assert FINGERPRINT.match(sent["fingerprint"])
    assert sent["labels"] == alert["labels"]
    assert sent["annotations"] == alert["annotations"]
    # Go's RFC 3339 with trailing zeros trimmed: "...:21.32Z" for a posted "...:21.320Z".
    assert _instant(sent["startsAt"]) == _instant(alert["startsAt"])
    assert sent["endsAt"] == ZERO_TIME
    assert sent["generatorURL"] == alert["generatorURL"]

    # The v2 API lists it, under the same fingerprint.
    [listed] = alertmanager.alerts(f'alertname="{name}"')
    assert listed["fingerprint"] == sent["fingerprint"]
    assert listed["status"]["state"] == "active"


def test_an_unchanged_alert_is_repeated_after_repeat_interval(
    alertmanager: Alertmanager, receiver: Receiver
) -> None:
    name = _name("HarnessRepeat")
    alertmanager.post_alerts([make_alert({"alertname": name, "instance": "web-1"})])
    _, first = receiver.wait_for(name, lambda d: True)
    index, repeat = receiver.wait_for(name, lambda d: True, after=1)
    gap = repeat.at - first.at
    _report(f"first webhook -> repeat (repeat_interval {DEFAULT_REPEAT_INTERVAL})", gap)

    assert index == 1  # nothing in between: the group did not change
    assert repeat.body["status"] == "firing"
    [a], [b] = first.body["alerts"], repeat.body["alerts"]
    assert (b["fingerprint"], b["startsAt"], b["status"]) == (a["fingerprint"], a["startsAt"], "firing")
    assert repeat.body["groupKey"] == first.body["groupKey"]
    # Sent on the first group_interval tick once repeat_interval has passed: not before it.
    assert REPEAT_INTERVAL * 0.9 <= gap <= REPEAT_INTERVAL + GROUP_INTERVAL + 2.0


def test_posting_an_alert_resolved_delivers_status_resolved(
    alertmanager: Alertmanager, receiver: Receiver
) -> None:
    name = _name("HarnessResolved")
    alert = make_alert({"alertname": name, "instance": "cache-1"}, {"summary": "cache down"})
    alertmanager.post_alerts([alert])
    _, firing = receiver.wait_for(name, lambda d: True)

    resolved_alert = resolve(alert)
    posted = time.perf_counter()
    alertmanager.post_alerts([resolved_alert])
    _, resolved = receiver.wait_for(name, lambda d: d.body["status"] == "resolved")
    _report("post resolved -> resolved webhook", resolved.at - posted)

    [a] = resolved.body["alerts"]
    assert a["status"] == "resolved"
    assert a["fingerprint"] == firing.body["alerts"][0]["fingerprint"]
    assert _instant(a["startsAt"]) == _instant(alert["startsAt"])
    assert _instant(a["endsAt"]) == _instant(resolved_alert["endsAt"])
    assert resolved.headers["Authorization"] == f"Bearer {TOKEN}"
    assert alertmanager.alerts(f'alertname="{name}"') == []  # resolved ones are not listed


def test_a_group_stays_firing_while_one_of_its_alerts_resolves(
    alertmanager: Alertmanager, receiver: Receiver
) -> None:
    name = _name("HarnessGroup")
    one = make_alert({"alertname": name, "instance": "node-1"}, {"summary": "node-1 down"})
    two = make_alert({"alertname": name, "instance": "node-2"}, {"summary": "node-2 down"})
    posted = time.perf_counter()
    alertmanager.post_alerts([one, two])
    # group_wait 0s: the first flush may hold only one of them; the next tick holds both.
    index, both = receiver.wait_for(name, lambda d: len(d.body["alerts"]) == 2)
    _report("post two alerts -> one webhook with both", both.at - posted)
    assert both.body["status"] == "firing"
    assert {a["status"] for a in both.body["alerts"]} == {"firing"}
    assert both.body["commonLabels"] == {"alertname": name}  # instance differs, so it is not common
    fingerprints = {i: a["fingerprint"] for i, a in _alerts_by_instance(both).items()}
    assert len(set(fingerprints.values())) == 2

    posted = time.perf_counter()
    alertmanager.post_alerts([resolve(one)])
    _, mixed = receiver.wait_for(
        name, lambda d: _alerts_by_instance(d).get("node-1", {}).get("status") == "resolved", after=index + 1
    )
    _report("resolve one of two -> webhook", mixed.at - posted)

    assert mixed.body["status"] == "firing"  # the group's status: one alert still fires
    by_instance = _alerts_by_instance(mixed)
    assert by_instance["node-1"]["status"] == "resolved"
    assert by_instance["node-1"]["endsAt"] != ZERO_TIME
    assert by_instance["node-2"]["status"] == "firing"
    assert by_instance["node-2"]["endsAt"] == ZERO_TIME
    assert {i: a["fingerprint"] for i, a in by_instance.items()} == fingerprints


# --- the harness itself (no binary needed) ---------------------------------------------------


def test_the_config_is_what_alertmanager_expects() -> None:
    am = Alertmanager("http://127.0.0.1:1/hook", bearer_token="t", group_by=["..."], repeat_interval=0.5)
    try:
        config = am.config()
    finally:
        am.close()
    route = config["route"]
    assert route == {
        "receiver": RECEIVER_NAME,
        "group_by": ["..."],
        "group_wait": "0s",
        "group_interval": DEFAULT_GROUP_INTERVAL,
        "repeat_interval": "500ms",
    }
    [receiver] = config["receivers"]
    assert receiver["webhook_configs"] == [
        {
            "url": "http://127.0.0.1:1/hook",
            "send_resolved": True,
            "max_alerts": 0,
            "http_config": {"authorization": {"type": "Bearer", "credentials": "t"}},
        }
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"group_interval": "0s"}, "cannot be zero"),
        ({"repeat_interval": 0}, "cannot be zero"),
        ({"group_wait": "0.5s"}, "not an Alertmanager duration"),
        ({"group_wait": -1}, "negative"),
        ({"group_by": ["...", "instance"]}, "cannot be combined"),
    ],
)
def test_the_harness_refuses_what_alertmanager_would(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Alertmanager("http://127.0.0.1:1/hook", **kwargs)


def test_durations() -> None:
    assert duration("1m30s") == "1m30s"
    assert seconds("1m30s") == 90.0
    assert seconds("250ms") == 0.25
    assert duration(1.5) == "1500ms"


def test_a_config_alertmanager_rejects_fails_fast_with_its_log() -> None:
    require_alertmanager()
    started = time.perf_counter()
    with (
        pytest.raises(RuntimeError, match=r"(?s)exited with 1.*unsupported scheme"),
        Alertmanager("ftp://127.0.0.1:1/hook"),
    ):
        pass  # pragma: no cover - start fails
    _report("bad config -> start failure", time.perf_counter() - started)

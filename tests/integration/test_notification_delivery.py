"""Notifications end to end in one process: ticket events -> pump -> outbox -> dispatcher ->
real receivers on loopback (Slack, PagerDuty, Standard Webhooks), with retries, give-up,
replay, pacing, storm control, silences and a restart between the ticket write and the send."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis
from typer.testing import CliRunner

from incident_responder.api.app import create_app
from incident_responder.cli import app as cli
from incident_responder.container import Services
from incident_responder.settings import Settings
from tests.conftest import ACME, GLOBEX
from tests.helpers import metric_total
from tests.receivers import PagerDutyReceiver, SlackReceiver, WebhookReceiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOTIFY = {"allow_private_targets": True, "update_interval": 0, "retry_base": 0.05, "retry_cap": 0.1}


@dataclass
class Rig:
    http: httpx.AsyncClient
    services: Services
    slack: SlackReceiver
    pagerduty: PagerDutyReceiver
    webhook: WebhookReceiver

    async def channels(self, **extra: Any) -> None:
        for cid, body in (
            ("slack", {"kind": "slack", "url": self.slack.url}),
            ("pd", {"kind": "pagerduty", "url": self.pagerduty.url, "routing_key": "R0UT1NGK3Y"}),
            ("hook", {"kind": "webhook", "url": self.webhook.url, "secret": SECRET}),
        ):
            r = await self.http.put(f"/v1/notifications/channels/{cid}", json={**body, **extra}, headers=ACME)
            assert r.status_code in (200, 201), r.text

    async def report(self, log: str, service: str = "db", **extra: Any) -> dict[str, Any]:
        r = await self.http.post(
            "/v1/incidents", json={"service": service, "log": log, **extra}, headers=ACME
        )
        assert r.status_code in (200, 201), r.text
        body: dict[str, Any] = r.json()
        return body

    async def deliver(self, tenant: str = "acme", within: float = 10.0) -> None:
        """Pump and dispatch until nothing is left to send (retries included)."""
        deadline = time.monotonic() + within
        outbox = self.services.backends.outbox
        while time.monotonic() < deadline:
            await self.services.stages.run("pump", lambda: self.services.pump.pump(tenant))
            await self.services.dispatcher.run_once()
            events = await self.services.stages.run("pump", lambda: self.services.events.pending(tenant, 10))
            if not events and outbox.counts()["pending"] == 0:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"still pending after {within}s: {outbox.counts()}")


@pytest.fixture
def receivers() -> Iterator[tuple[SlackReceiver, PagerDutyReceiver, WebhookReceiver]]:
    with SlackReceiver() as slack, PagerDutyReceiver() as pd, WebhookReceiver(SECRET) as hook:
        yield slack, pd, hook


@pytest.fixture
async def rig(
    make_settings: Callable[..., Settings],
    make_services: Callable[..., Services],
    receivers: tuple[SlackReceiver, PagerDutyReceiver, WebhookReceiver],
) -> AsyncIterator[Rig]:
    settings = make_settings(notifications=NOTIFY)
    services = make_services(settings)
    app = create_app(settings, services=services)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        yield Rig(http, services, *receivers)
    await services.aclose()


def _db(n: int) -> str:
    return f"ERROR pool-{n}: could not connect to postgres at 10.0.0.{n}:5432: connection refused"


async def test_a_new_ticket_reaches_every_channel_once_and_its_resolution_follows(rig: Rig) -> None:
    await rig.channels()
    new = await rig.report(_db(1), severity="critical", title="Postgres refuses connections")
    await rig.deliver()
    assert len(rig.slack.accepted) == len(rig.pagerduty.accepted) == len(rig.webhook.accepted) == 1
    slack = rig.slack.accepted[0].body
    assert (
        slack["blocks"][0]["type"] == "header"
        and "Postgres refuses connections" in slack["blocks"][0]["text"]["text"]
    )
    pd = rig.pagerduty.accepted[0].body
    assert (pd["event_action"], pd["dedup_key"], pd["routing_key"]) == (
        "trigger",
        new["ticket_id"],
        "R0UT1NGK3Y",
    )
    assert pd["payload"]["severity"] == "critical" and pd["payload"]["source"] == "db"
    hook = rig.webhook.accepted[0]
    assert hook.body["type"] == "ticket.new" and hook.body["data"]["ticket_id"] == new["ticket_id"]
    assert hook.headers["webhook-id"] == hook.body["data"]["message_id"]

    resolved = await rig.http.post(f"/v1/tickets/{new['ticket_id']}/resolve", json={}, headers=ACME)
    assert resolved.status_code == 200
    await rig.deliver()
    assert rig.pagerduty.accepted_events() == [("trigger", new["ticket_id"]), ("resolve", new["ticket_id"])]
    assert [a.body["type"] for a in rig.webhook.accepted] == ["ticket.new", "ticket.resolved"]
    registry = rig.services.metrics.registry
    assert metric_total(registry, "ir_notifications_total", kind="pagerduty", outcome="sent") == 2


async def test_a_storm_of_repeats_sends_one_message_per_ticket(rig: Rig) -> None:
    await rig.channels()
    batch = {"incidents": [{"service": "db", "log": _db(i % 7)} for i in range(300)]}
    r = await rig.http.post("/v1/incidents/batch", json=batch, headers=ACME)
    assert r.status_code == 200
    tickets = {x["ticket_id"] for x in r.json()["results"]}
    assert len(tickets) == 1
    await rig.deliver()
    assert len(rig.slack.accepted) == len(rig.pagerduty.accepted) == len(rig.webhook.accepted) == 1


async def test_a_receiver_that_fails_first_gets_each_message_once(rig: Rig) -> None:
    rig.webhook.fail_first = 2
    rig.slack.fail_first, rig.slack.throttle = 1, True  # a 429 with Retry-After: 1
    await rig.channels()
    await rig.report(_db(1))
    await rig.deliver()
    assert [a.status for a in rig.webhook.attempts] == [500, 500, 204]
    ids = [a.headers["webhook-id"] for a in rig.webhook.attempts]
    assert len(set(ids)) == 1 and rig.webhook.accepted_ids() == ids[:1]
    assert len({a.raw for a in rig.webhook.attempts}) == 1  # the same bytes on every attempt
    assert [a.status for a in rig.slack.attempts] == [429, 200]
    registry = rig.services.metrics.registry
    assert metric_total(registry, "ir_notifications_total", kind="webhook", outcome="retried") == 2
    assert metric_total(registry, "ir_notifications_total", kind="slack", outcome="retried") == 1
    sent = {m.channel_id: m for m in rig.services.backends.outbox.listing("sent", 10)}
    assert sent["hook"].attempts == 2 and sent["slack"].attempts == 1 and sent["pd"].attempts == 0


async def test_a_message_given_up_is_dead_listed_and_replayed_from_the_cli(
    make_settings: Callable[..., Settings],
    make_services: Callable[..., Services],
    receivers: tuple[SlackReceiver, PagerDutyReceiver, WebhookReceiver],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(
        notifications={**NOTIFY, "give_up_after": 1.0, "retry_base": 0.2, "retry_cap": 0.5}
    )
    services = make_services(settings)
    app = create_app(settings, services=services)
    slack, pd, hook = receivers
    hook.fail_first = 1_000
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        rig = Rig(http, services, slack, pd, hook)
        await rig.http.put(
            "/v1/notifications/channels/hook", json={"kind": "webhook", "url": hook.url, "secret": SECRET},
            headers=ACME,
        )  # fmt: skip
        await rig.report(_db(1))
        await rig.deliver()
        (dead,) = services.backends.outbox.listing("dead", 10)
        assert dead.attempts >= 2 and "HTTP 500" in dead.last_error
        assert hook.accepted == []

        monkeypatch.setenv("IR_DATA_DIR", str(settings.data_dir))
        listed = CliRunner().invoke(cli, ["notify", "list"])
        assert listed.exit_code == 0 and dead.message_id in listed.output and "dead=1" in listed.output
        hook.fail_first = 0
        replayed = CliRunner().invoke(cli, ["notify", "replay", dead.message_id, "msg_nothing"])
        assert replayed.exit_code == 1 and "not a dead message: msg_nothing" in replayed.output
        await rig.deliver()
        assert hook.accepted_ids() == [dead.message_id]
        assert services.backends.outbox.counts() == {"pending": 0, "sent": 1, "dead": 0}
    await services.aclose()


async def test_an_answer_no_retry_can_change_gives_up_at_once(rig: Rig) -> None:
    await rig.http.put(
        "/v1/notifications/channels/gone",
        json={"kind": "slack", "url": rig.slack.base_url + "/nowhere"}, headers=ACME,
    )  # fmt: skip
    await rig.report(_db(1))
    await rig.deliver()
    (dead,) = rig.services.backends.outbox.listing("dead", 10)
    assert dead.attempts == 1 and dead.last_error.startswith("HTTP 404")


async def test_channels_filter_by_event_service_and_severity(rig: Rig) -> None:
    await rig.http.put(
        "/v1/notifications/channels/pd",
        json={"kind": "pagerduty", "url": rig.pagerduty.url, "routing_key": "K", "services": ["db"],
              "severities": ["critical"], "events": ["new"]},
        headers=ACME,
    )  # fmt: skip
    await rig.report(_db(1), severity="critical")  # wanted
    await rig.report("disk full on /var", service="web", severity="critical")  # another service
    low = await rig.report("TLS certificate expires in 20 days", severity="low")  # too low
    await rig.http.post(f"/v1/tickets/{low['ticket_id']}/resolve", json={}, headers=ACME)
    await rig.deliver()
    assert len(rig.pagerduty.accepted) == 1 and rig.pagerduty.accepted[0].body["payload"]["source"] == "db"


async def test_storm_control_waits_for_n_reports(rig: Rig) -> None:
    await rig.channels()
    r = await rig.http.put(
        "/v1/policy", json={"storm_by_service": {"db": {"reports": 3, "within": 60}}}, headers=ACME
    )
    assert r.status_code == 200
    first = await rig.report(_db(1))
    await rig.report(_db(2))
    await rig.report("disk full on /var", service="web")  # another service: at once
    await rig.deliver()
    assert [a.body["payload"]["source"] for a in rig.pagerduty.accepted] == ["web"]
    third = await rig.report(_db(3))
    assert third["ticket_id"] == first["ticket_id"]
    await rig.deliver()
    assert [a.body["payload"]["source"] for a in rig.pagerduty.accepted] == ["web", "db"]
    assert rig.pagerduty.accepted[1].body["payload"]["custom_details"]["occurrences"] == 3


async def test_updates_to_one_ticket_are_paced(rig: Rig) -> None:
    await rig.channels()
    await rig.http.put("/v1/policy", json={"update_interval": 3600}, headers=ACME)
    new = await rig.report(_db(1))
    await rig.deliver()
    for _ in range(3):  # resolve, reopen, resolve within the interval
        await rig.http.post(f"/v1/tickets/{new['ticket_id']}/resolve", json={}, headers=ACME)
        await rig.report(_db(2))
    await rig.http.post(f"/v1/tickets/{new['ticket_id']}/resolve", json={}, headers=ACME)
    put, wake = rig.services.pump.pump("acme")
    assert put == 0 and wake is not None and wake > 3000
    assert len(rig.webhook.accepted) == 1
    await rig.http.put("/v1/policy", json={"update_interval": 0}, headers=ACME)
    await rig.deliver()
    # what piled up goes out as one message: the latest state
    assert [a.body["type"] for a in rig.webhook.accepted] == ["ticket.new", "ticket.resolved"]


async def test_silenced_reports_notify_nobody(rig: Rig) -> None:
    await rig.channels()
    r = await rig.http.post(
        "/v1/silences", json={"services": ["db"], "ends_at": "2099-01-01T00:00:00Z"}, headers=ACME
    )
    assert r.status_code == 201
    quiet = await rig.report(_db(1))
    assert quiet["silenced"] is True
    await rig.report("disk full on /var", service="web")
    await rig.deliver()
    assert [a.body["data"]["service"] for a in rig.webhook.accepted] == ["web"]


async def test_an_event_written_before_a_stop_is_sent_after_the_restart(
    make_settings: Callable[..., Settings],
    make_services: Callable[..., Services],
    receivers: tuple[SlackReceiver, PagerDutyReceiver, WebhookReceiver],
) -> None:
    """A stop between the ticket write and its notification loses nothing, sends nothing twice."""
    settings = make_settings(notifications=NOTIFY)
    slack, pd, hook = receivers
    before = make_services(settings)
    app = create_app(settings, services=before)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        rig = Rig(http, before, slack, pd, hook)
        await rig.channels()
        new = await rig.report(_db(1))
        assert before.events.pending("acme", 10)  # written with the ticket, not sent yet
    await before.aclose()
    before.close()

    after = make_services(settings)  # the same data dir, as a restarted process
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings, services=after)), base_url="http://t"
    ) as http:
        rig = Rig(http, after, slack, pd, hook)
        await rig.deliver()
        # the pump running twice over the same event (two replicas) still sends it once
        pending = after.events.pending("acme", 10)
        assert pending == []
    assert hook.accepted_ids() == [hook.accepted[0].headers["webhook-id"]]
    assert [e for e in pd.accepted_events()] == [("trigger", new["ticket_id"])]
    await after.aclose()


async def test_putting_the_same_event_twice_delivers_it_once(rig: Rig) -> None:
    await rig.channels()
    await rig.report(_db(1))
    (event,) = rig.services.events.pending("acme", 10)
    ticket, _ = rig.services.tickets.get("acme", event.ticket_id)
    messages = rig.services.pump._messages(ticket, event, time.time())  # what a second replica would put
    rig.services.backends.outbox.put(messages)
    await rig.deliver()
    rig.services.backends.outbox.put(messages)  # and once more after delivery
    await rig.deliver()
    assert len(rig.slack.accepted) == len(rig.pagerduty.accepted) == len(rig.webhook.accepted) == 1


async def test_channels_are_validated_masked_and_per_tenant(rig: Rig) -> None:
    url = "/v1/notifications/channels"
    hook = {"kind": "webhook", "url": rig.webhook.url, "secret": SECRET}
    first = await rig.http.put(f"{url}/hook", json=hook, headers=ACME)
    assert first.status_code == 201 and first.json()["secret"] == "********"
    masked = {**hook, "secret": "********", "events": ["new"]}
    again = await rig.http.put(f"{url}/hook", json=masked, headers=ACME)
    assert again.status_code == 200 and again.json()["events"] == ["new"]
    assert rig.services.channels.get("acme", "hook").secret == SECRET  # the mask kept the stored secret
    listed = (await rig.http.get(url, headers=ACME)).json()["channels"]
    assert [c["channel_id"] for c in listed] == ["hook"] and SECRET not in str(listed)
    assert (await rig.http.get(f"{url}/hook", headers=GLOBEX)).status_code == 404
    for bad in (
        {"kind": "pagerduty", "url": ""},  # no routing key
        {"kind": "slack", "url": "ftp://example.org/x"},
        {"kind": "slack", "url": "https://user:pw@example.org/x"},
        {"kind": "slack", "url": rig.slack.url, "secret": "not-for-slack"},
        {"kind": "webhook", "url": rig.webhook.url, "secret": "whsec_!!!"},
        {"kind": "webhook", "url": rig.webhook.url, "secret": "short"},
        {"kind": "webhook", "url": rig.webhook.url, "events": []},
        {"kind": "email", "url": rig.webhook.url},
    ):
        r = await rig.http.put(f"{url}/bad", json=bad, headers=ACME)
        assert r.status_code == 422, (bad, r.text)
    pd = await rig.http.put(f"{url}/pd", json={"kind": "pagerduty", "routing_key": "K"}, headers=ACME)
    assert pd.status_code == 201 and pd.json()["url"] == "https://events.pagerduty.com/v2/enqueue"
    assert pd.json()["routing_key"] == "********"
    assert (await rig.http.delete(f"{url}/hook", headers=ACME)).status_code == 204
    assert (await rig.http.get(f"{url}/hook", headers=ACME)).status_code == 404


async def test_the_test_endpoint_reports_what_the_receiver_said(rig: Rig) -> None:
    await rig.channels()
    ok = (await rig.http.post("/v1/notifications/channels/slack/test", headers=ACME)).json()
    assert ok["delivered"] is True and ok["status_code"] == 200
    assert rig.slack.accepted[0].body["blocks"][0]["text"]["text"].startswith("[TEST]")
    rig.webhook.fail_first = 1
    failed = (await rig.http.post("/v1/notifications/channels/hook/test", headers=ACME)).json()
    assert failed["delivered"] is False and failed["status_code"] == 500 and "HTTP 500" in failed["error"]


async def test_private_targets_are_refused_unless_allowed(make_client: Any, receivers: Any) -> None:
    slack = receivers[0]
    async with make_client() as http:
        r = await http.put(
            "/v1/notifications/channels/s", json={"kind": "slack", "url": slack.url}, headers=ACME
        )
        assert r.status_code == 422 and "non-public address" in r.json()["error"]["message"]
        meta = {"kind": "slack", "url": "http://169.254.169.254/latest/meta-data/"}
        assert (await http.put("/v1/notifications/channels/m", json=meta, headers=ACME)).status_code == 422


async def test_the_redis_outbox_delivers_the_same(
    make_settings: Callable[..., Settings],
    make_services: Callable[..., Services],
    receivers: tuple[SlackReceiver, PagerDutyReceiver, WebhookReceiver],
) -> None:
    url = "redis://127.0.0.1:6379/7"
    redis.Redis.from_url(url).flushdb()  # a database of its own: the outbox is global
    settings = make_settings(redis={"url": url}, notifications={**NOTIFY, "outbox": "redis"})
    services = make_services(settings)
    assert type(services.backends.outbox).__name__ == "RedisOutbox"
    slack, pd, hook = receivers
    hook.fail_first = 1
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings, services=services)), base_url="http://t"
    ) as http:
        rig = Rig(http, services, slack, pd, hook)
        await rig.channels()
        new = await rig.report(_db(1))
        await rig.deliver()
        await rig.http.post(f"/v1/tickets/{new['ticket_id']}/resolve", json={}, headers=ACME)
        await rig.deliver()
    assert pd.accepted_events() == [("trigger", new["ticket_id"]), ("resolve", new["ticket_id"])]
    assert [a.body["type"] for a in hook.accepted] == ["ticket.new", "ticket.resolved"]
    assert services.backends.outbox.counts() == {"pending": 0, "sent": 6, "dead": 0}
    await services.aclose()

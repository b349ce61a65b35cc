"""Backends down, slow or erroring in the middle of a stream of incidents: afterwards,
with the backend back and the dead letters replayed, every accepted incident is in
exactly one ticket, exactly once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from incident_responder.api.app import create_app
from incident_responder.backends import build_backends, build_object_store, build_vector_index
from incident_responder.container import Services, build_services
from incident_responder.settings import Settings
from tests.conftest import ACME
from tests.faults.flaky import FlakyIndex, FlakyStore, Switch
from tests.helpers import db_log, disk_log, tls_log
from tests.s3_servers import S3Server


@dataclass
class Rig:
    http: httpx.AsyncClient
    services: Services
    store: Switch
    index: Switch


@pytest.fixture
async def rig(make_settings: Callable[..., Settings], embedder: Any) -> AsyncIterator[Rig]:
    settings = make_settings(
        reliability={
            "retry_attempts": 2,
            "retry_initial_wait": 0.001,
            "retry_max_wait": 0.002,
            "breaker_fail_max": 3,
            "breaker_reset_timeout": 0.6,
            "dlq_replay_interval": 0.05,
        }
    )
    store, index = Switch(), Switch()
    real = build_backends(
        settings,
        embedder=embedder,
        objects=FlakyStore(build_object_store(settings.tickets, settings.data_dir), store),
        index=FlakyIndex(build_vector_index(settings.vector, settings.data_dir, embedder.dim), index),
    )
    services = build_services(settings, backends=real)
    app = create_app(settings, services=services)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        yield Rig(http, services, store, index)
    services.close()


LOGS = [db_log, disk_log, tls_log]


async def _stream(rig: Rig, n: int, outage: Callable[[int], None]) -> list[dict[str, Any]]:
    accepted = []
    for i in range(n):
        outage(i)
        body = {"service": f"svc{i % 3}", "log": LOGS[(i // 3) % 3](i)}
        r = await rig.http.post("/v1/incidents", json=body, headers=ACME)
        assert r.status_code in (200, 201, 202), r.text
        accepted.append(r.json())
    return accepted


async def _assert_each_applied_once(rig: Rig, accepted: list[dict[str, Any]]) -> None:
    ids = {a["incident_id"] for a in accepted}
    assert len(ids) == len(accepted)
    for a in accepted:
        now = (await rig.http.get(f"/v1/incidents/{a['incident_id']}", headers=ACME)).json()
        assert now["status"] in ("new", "existing", "regression") and now["ticket_id"], now
    tickets = (await rig.http.get("/v1/tickets?limit=500", headers=ACME)).json()["tickets"]
    seen = Counter(c["incident_id"] for t in tickets for c in t["comments"] if c["incident_id"])
    assert set(seen) == ids and set(seen.values()) == {1}, "an accepted incident was lost or applied twice"
    assert sum(t["occurrences"] for t in tickets) == len(accepted)
    print(f"\nsent/acknowledged {len(accepted)}, found {len(seen)}; tickets expected 9, found {len(tickets)}")
    # And dedup still worked: 3 services x 3 kinds of incident.
    assert len(tickets) == 9


@pytest.mark.parametrize("which", ["index", "store", "both"])
async def test_outage_mid_stream_then_replay(rig: Rig, which: str) -> None:
    def outage(i: int) -> None:
        down = 10 <= i < 22
        if which in ("index", "both"):
            rig.index.down = down
        if which in ("store", "both"):
            rig.store.down = down

    accepted = await _stream(rig, 36, outage)
    queued = [i for i, a in enumerate(accepted) if a["status"] == "queued"]
    # Everything sent during the outage queued; so did what came while the circuit
    # stayed open after the backend returned (until its reset timeout).
    assert all(accepted[i]["ticket_id"] is None for i in queued)
    if which == "index":
        # With the index down, repeats whose fingerprint this process already knows are
        # still applied (no index call needed); everything else waits in the queue.
        applied_anyway = set(range(10, 22)) - set(queued)
        assert len(queued) >= 3
        assert all(accepted[i]["match"]["method"] == "fingerprint" for i in applied_anyway)
    else:
        assert set(range(10, 22)) <= set(queued)
    assert rig.services.backends.dead_letters.depth() == len(queued)

    await asyncio.sleep(0.65)  # past the breaker's reset timeout
    applied, waiting = await rig.services.replay_dead_letters()
    assert (applied, waiting) == (len(queued), 0)
    await _assert_each_applied_once(rig, accepted)

    # Replaying again applies nothing twice.
    for letter in rig.services.backends.dead_letters.pending(1000):
        raise AssertionError(f"still pending: {letter}")
    assert (await rig.services.replay_dead_letters()) == (0, 0)


async def test_queued_outcome_is_visible_while_down(rig: Rig) -> None:
    rig.index.down = True
    r = await rig.http.post("/v1/incidents", json={"service": "a", "log": db_log(1)}, headers=ACME)
    assert r.status_code == 202 and r.json()["status"] == "queued"
    got = await rig.http.get(f"/v1/incidents/{r.json()['incident_id']}", headers=ACME)
    assert got.status_code == 200 and got.json()["status"] == "queued"
    await rig.http.post("/v1/incidents", json={"service": "a", "log": db_log(2)}, headers=ACME)  # trips it
    ready = (await rig.http.get("/readyz")).json()
    assert ready["circuits"]["vector:qdrant-edge"] == "open" and ready["status"] == "degraded"
    assert (
        ready["backends"]["vector:qdrant-edge"].startswith("error")
        and ready["backends"]["tickets:local"] == "ok"
    )


async def test_breaker_opens_fails_fast_and_recovers(rig: Rig) -> None:
    rig.index.down = True
    for i in range(3):
        await rig.http.post("/v1/incidents", json={"service": "a", "log": tls_log(i)}, headers=ACME)
    calls_when_open = rig.index.calls
    r = await rig.http.post("/v1/incidents", json={"service": "a", "log": tls_log(9)}, headers=ACME)
    assert r.status_code == 202
    assert rig.index.calls == calls_when_open, "an open circuit must not call the backend"
    text = (await rig.http.get("/metrics")).text
    assert 'ir_circuit_breaker_state{backend="vector:qdrant-edge"} 2.0' in text
    rig.index.down = False
    await asyncio.sleep(0.65)
    ok = await rig.http.post("/v1/incidents", json={"service": "b", "log": db_log(1)}, headers=ACME)
    assert ok.status_code == 201
    assert (await rig.http.get("/readyz")).json()["circuits"]["vector:qdrant-edge"] == "closed"


async def test_slow_backend_still_answers_and_loses_nothing(rig: Rig) -> None:
    rig.store.delay = 0.02
    accepted = await _stream(rig, 9, lambda i: None)
    rig.store.delay = 0.0
    await _assert_each_applied_once_subset(rig, accepted)


async def _assert_each_applied_once_subset(rig: Rig, accepted: list[dict[str, Any]]) -> None:
    tickets = (await rig.http.get("/v1/tickets?limit=500", headers=ACME)).json()["tickets"]
    seen = Counter(c["incident_id"] for t in tickets for c in t["comments"] if c["incident_id"])
    assert set(seen) == {a["incident_id"] for a in accepted} and set(seen.values()) == {1}


async def test_dead_letter_queue_down_too_is_503_and_records_nothing(rig: Rig) -> None:
    rig.index.down = True
    dlq_path = rig.services.settings.data_dir / "dead-letters.sqlite3"
    dlq_path.unlink()
    dlq_path.mkdir()  # the queue file can no longer be opened
    r = await rig.http.post("/v1/incidents", json={"service": "a", "log": db_log(1)}, headers=ACME)
    assert r.status_code == 503 and r.json()["error"]["code"] in ("backend_unavailable", "circuit_open")
    rig.index.down = False
    await asyncio.sleep(0.65)
    assert (await rig.http.get("/v1/tickets", headers=ACME)).json()["tickets"] == []


async def test_automatic_replay_when_backend_returns(
    make_settings: Callable[..., Settings], embedder: Any
) -> None:
    settings = make_settings(
        reliability={"retry_attempts": 1, "breaker_reset_timeout": 0.1, "dlq_replay_interval": 0.05}
    )
    switch = Switch(down=True)
    real = build_backends(
        settings,
        embedder=embedder,
        index=FlakyIndex(build_vector_index(settings.vector, settings.data_dir, embedder.dim), switch),
    )
    services = build_services(settings, backends=real)
    app = create_app(settings, services=services)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        r = await http.post("/v1/incidents", json={"service": "a", "log": disk_log(1)}, headers=ACME)
        assert r.json()["status"] == "queued"
        switch.down = False
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            got = (await http.get(f"/v1/incidents/{r.json()['incident_id']}", headers=ACME)).json()
            if got["status"] != "queued":
                break
            await asyncio.sleep(0.05)
        assert got["status"] == "new" and got["ticket_id"]


async def test_sqs_dead_letters_end_to_end(
    make_settings: Callable[..., Settings], embedder: Any, moto_s3: S3Server
) -> None:
    import boto3

    sqs = boto3.session.Session().client(
        "sqs", endpoint_url=moto_s3.endpoint_url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    url = sqs.create_queue(QueueName=f"ir-e2e-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    sqs.close()
    settings = make_settings(
        redis={"url": "redis://127.0.0.1:6379/0"},
        rate_limit={"per_key": "", "per_tenant": ""},
        reliability={"retry_attempts": 1, "breaker_reset_timeout": 0.2},
        dead_letters={"kind": "sqs", "queue_url": url, "endpoint_url": moto_s3.endpoint_url,
                      "access_key_id": "testing", "secret_access_key": "testing"},
    )  # fmt: skip
    switch = Switch(down=True)
    real = build_backends(
        settings,
        embedder=embedder,
        index=FlakyIndex(build_vector_index(settings.vector, settings.data_dir, embedder.dim), switch),
    )
    services = build_services(settings, backends=real)
    try:
        app = create_app(settings, services=services)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            queued = [
                (
                    await http.post("/v1/incidents", json={"service": "a", "log": db_log(i)}, headers=ACME)
                ).json()
                for i in range(3)
            ]
            assert [q["status"] for q in queued] == ["queued"] * 3
            got = await http.get(f"/v1/incidents/{queued[0]['incident_id']}", headers=ACME)
            assert got.json()["status"] == "queued"  # answered from the Redis record, SQS holds the letter
            switch.down = False
            await asyncio.sleep(0.3)
            assert await services.replay_dead_letters() == (3, 0)
            outcomes = [
                (await http.get(f"/v1/incidents/{q['incident_id']}", headers=ACME)).json() for q in queued
            ]
            assert [o["status"] for o in outcomes] == ["new", "existing", "existing"]
            assert len({o["ticket_id"] for o in outcomes}) == 1
    finally:
        services.close()

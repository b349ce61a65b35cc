"""The whole service with recommender kind=openai against a Chat Completions server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import httpx
import pytest

from incident_responder.api.app import create_app
from incident_responder.container import Services
from incident_responder.settings import Settings
from tests.conftest import ACME, MakeClient
from tests.helpers import DB_RUNBOOK, DISK_RUNBOOK, db_log, disk_log
from tests.openai_fake import FakeOpenAI, Reply, answer, error, serve
from tests.receivers import WebhookReceiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    yield from serve()


async def test_llm_recommendation_then_fallback_when_it_breaks(
    fake: FakeOpenAI, make_settings: Callable[..., Settings], make_services: Callable[..., Services]
) -> None:
    settings = make_settings(
        recommender={"kind": "openai", "base_url": fake.base_url, "api_key": "sk-test-123", "timeout": 0.5,
                     "max_retries": 0, "model": "tiny", "asynchronous": False},
        reliability={"breaker_fail_max": 2, "breaker_reset_timeout": 60},
        # every incident here shares one runbook context: the cache would answer instead
        performance={"recommendation_cache_size": 0},
    )  # fmt: skip
    services = make_services(settings)
    app = create_app(settings, services=services)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        await http.put(
            "/v1/runbooks/db-refused", json={"title": "DB refused", "content": DB_RUNBOOK}, headers=ACME
        )
        fake.script(answer("Database is refusing connections.", [("Restart the pooler", "db-refused")]))
        first = (
            await http.post("/v1/incidents", json={"service": "api", "log": db_log(1)}, headers=ACME)
        ).json()
        rec = first["recommendation"]
        assert rec["source"] == "llm:tiny"
        assert rec["steps"] == ["Restart the pooler [runbook: db-refused]"]
        assert "Bearer sk-test-123" in fake.requests[0].headers["authorization"]
        metrics = (await http.get("/metrics")).text
        assert 'ir_llm_tokens_total{direction="in"} 100.0' in metrics
        # 100 prompt + 20 completion tokens at the default gpt-4o-mini prices ($0.15 / $0.60 per 1M)
        assert "ir_llm_cost_usd_total 2.7e-05" in metrics

        # The LLM fails twice (circuit opens), then is not called at all: the offline
        # recommender answers every time and nothing is lost.
        fake.script(error(500), error(500))
        for i in range(3):
            r = await http.post("/v1/incidents", json={"service": f"s{i}", "log": db_log(i)}, headers=ACME)
            assert r.status_code == 201
            assert r.json()["runbooks"] and r.json()["recommendation"]["source"] == "offline-extractive"
        assert len(fake.requests) == 3, "the open circuit must keep further calls away from the LLM"
        r = (await http.post("/v1/incidents", json={"service": "x", "log": db_log(5)}, headers=ACME)).json()
        assert r["recommendation"]["source"] == "offline-extractive"
        assert "sk-test-123" not in (await http.get("/metrics")).text


async def test_near_identical_new_incidents_reuse_the_llm_recommendation(
    fake: FakeOpenAI, make_client: MakeClient
) -> None:
    """The same failure in three services opens three tickets (dedup is per service) but asks
    the LLM once; a different failure, a failed LLM call and an edited runbook each ask again."""
    async with make_client(
        recommender={"kind": "openai", "base_url": fake.base_url, "api_key": "sk-test-123", "timeout": 0.5,
                     "max_retries": 0, "model": "tiny", "asynchronous": False},
        reliability={"breaker_fail_max": 5, "breaker_reset_timeout": 60},
    ) as http:  # fmt: skip
        for rid, title, content in (
            ("db-refused", "DB refused", DB_RUNBOOK),
            ("disk-full", "Disk full", DISK_RUNBOOK),
        ):
            await http.put(f"/v1/runbooks/{rid}", json={"title": title, "content": content}, headers=ACME)

        async def report(service: str, log: str) -> dict[str, object]:
            r = await http.post("/v1/incidents", json={"service": service, "log": log}, headers=ACME)
            assert r.status_code == 201, r.text
            body: dict[str, object] = r.json()
            return body

        fake.script(answer("Database is refusing connections.", [("Restart the pooler", "db-refused")]))
        first = await report("api", db_log(1))
        reused = [await report(service, db_log(n)) for n, service in ((2, "billing"), (3, "search"))]
        assert len(fake.requests) == 1, "the same failure in other services must not ask the LLM again"
        assert len({first["ticket_id"], *(r["ticket_id"] for r in reused)}) == 3
        assert all(r["recommendation"] == first["recommendation"] for r in reused)

        # A failed call is answered offline, and that answer is not kept: the next disk
        # incident asks the LLM again.
        fake.script(error(500))
        offline = await report("api", disk_log(1))
        fake.script(answer("The disk is full.", [("Rotate the logs", "disk-full")]))
        disk = await report("web", disk_log(2))
        assert offline["recommendation"]["source"] == "offline-extractive"  # type: ignore[index]
        assert disk["recommendation"]["source"] == "llm:tiny"  # type: ignore[index]
        assert len(fake.requests) == 3

        # Editing the runbook changes the context: the next incident asks the LLM again.
        await http.put(
            "/v1/runbooks/db-refused",
            json={"title": "DB refused", "content": DB_RUNBOOK + "3. Page the DBA on call.\n"},
            headers=ACME,
        )
        fake.script(answer("Database is refusing connections.", [("Page the DBA", "db-refused")]))
        edited = await report("cron", db_log(6))
        assert len(fake.requests) == 4
        assert edited["recommendation"]["steps"] == ["Page the DBA [runbook: db-refused]"]  # type: ignore[index]
        metrics = (await http.get("/metrics")).text
        assert 'ir_cache_lookups_total{cache="recommendation",result="hit"} 2.0' in metrics
        assert 'ir_cache_lookups_total{cache="recommendation",result="miss"} 4.0' in metrics


async def _until(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_the_llm_answer_is_added_after_the_ticket_opened_and_its_message_waits_for_it(
    fake: FakeOpenAI, make_settings: Callable[..., Settings], make_services: Callable[..., Services]
) -> None:
    """A slow LLM never holds up intake: the ticket opens with the offline recommendation, the
    LLM's replaces it when it arrives, and the new ticket's message waits for it."""
    settings = make_settings(
        recommender={"kind": "openai", "base_url": fake.base_url, "api_key": "sk-test-123", "timeout": 5,
                     "max_retries": 0, "model": "tiny"},
        notifications={"allow_private_targets": True, "update_interval": 0, "recommendation_wait": 30},
    )  # fmt: skip
    services = make_services(settings)
    app = create_app(settings, services=services)
    slow = answer("Database is refusing connections.", [("Restart the pooler", "db-refused")])
    fake.script(Reply(status=slow.status, body=slow.body, delay=1.0))
    with WebhookReceiver(SECRET) as hook:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            await http.put(
                "/v1/runbooks/db-refused", json={"title": "DB refused", "content": DB_RUNBOOK}, headers=ACME
            )
            channel = {"kind": "webhook", "url": hook.url, "secret": SECRET}
            await http.put("/v1/notifications/channels/hook", json=channel, headers=ACME)
            new = (
                await http.post("/v1/incidents", json={"service": "api", "log": db_log(1)}, headers=ACME)
            ).json()
            assert new["status"] == "new" and new["recommendation"]["source"] == "offline-extractive"
            assert new["runbooks"][0]["id"] == "db-refused"
            ticket_url = f"/v1/tickets/{new['ticket_id']}"
            assert (await http.get(ticket_url, headers=ACME)).json()["recommendation_pending"] is True
            put, wake = services.pump.pump("acme")  # the new ticket's message waits for the LLM
            assert put == 0 and wake is not None

            async def answered() -> bool:
                return not (await http.get(ticket_url, headers=ACME)).json()["recommendation_pending"]

            await _until(answered)
            ticket = (await http.get(ticket_url, headers=ACME)).json()
            assert ticket["recommendation"]["source"] == "llm:tiny"
            assert ticket["recommendation"]["steps"] == ["Restart the pooler [runbook: db-refused]"]
            assert services.pump.pump("acme")[0] == 1
            await services.dispatcher.run_once()
            (message,) = hook.wait_for(1)
            assert message.body["data"]["recommendation_source"] == "llm:tiny"
    await services.aclose()


async def test_asks_left_by_a_stop_are_answered_after_the_restart(
    fake: FakeOpenAI, make_settings: Callable[..., Settings], make_services: Callable[..., Services]
) -> None:
    settings = make_settings(
        recommender={"kind": "openai", "base_url": fake.base_url, "api_key": "sk-test-123", "timeout": 5,
                     "max_retries": 0, "model": "tiny"},
    )  # fmt: skip
    before = make_services(settings)
    fake.script(Reply(status=500, body={"error": {"message": "x"}}, delay=2.0))  # still thinking at the stop
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings, services=before)), base_url="http://t"
    ) as http:
        await http.put(
            "/v1/runbooks/db-refused", json={"title": "DB refused", "content": DB_RUNBOOK}, headers=ACME
        )
        new = (
            await http.post("/v1/incidents", json={"service": "api", "log": db_log(1)}, headers=ACME)
        ).json()

        async def asked() -> bool:
            return len(fake.requests) == 1

        await _until(asked)
    await before.aclose()  # stops the asking before the answer
    before.close()
    assert len(fake.requests) == 1

    fake.script(answer("Database is refusing connections.", [("Restart the pooler", "db-refused")]))
    after = make_services(settings)
    app = create_app(settings, services=after)
    async with (
        app.router.lifespan_context(app),  # start-up resumes the asks
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        ticket_url = f"/v1/tickets/{new['ticket_id']}"

        async def answered() -> bool:
            return not (await http.get(ticket_url, headers=ACME)).json()["recommendation_pending"]

        await _until(answered)
        assert (await http.get(ticket_url, headers=ACME)).json()["recommendation"]["source"] == "llm:tiny"
    assert after.later is not None and after.later.pending(["acme"]) == []

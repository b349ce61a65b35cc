"""The whole service with recommender kind=openai against a Chat Completions server."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from incident_responder.api.app import create_app
from incident_responder.container import Services
from incident_responder.settings import Settings
from tests.conftest import ACME, MakeClient
from tests.helpers import DB_RUNBOOK, DISK_RUNBOOK, db_log, disk_log
from tests.openai_fake import FakeOpenAI, answer, error, serve


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

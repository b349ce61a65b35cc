"""The whole service with recommender kind=openai against a Chat Completions server."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from incident_responder.api.app import create_app
from incident_responder.container import Services
from incident_responder.settings import Settings
from tests.conftest import ACME
from tests.helpers import DB_RUNBOOK, db_log
from tests.openai_fake import FakeOpenAI, answer, error, serve


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    yield from serve()


async def test_llm_recommendation_then_fallback_when_it_breaks(
    fake: FakeOpenAI, make_settings: Callable[..., Settings], make_services: Callable[..., Services]
) -> None:
    settings = make_settings(
        recommender={"kind": "openai", "base_url": fake.base_url, "api_key": "sk-test-123", "timeout": 0.5,
                     "max_retries": 0, "model": "tiny"},
        reliability={"breaker_fail_max": 2, "breaker_reset_timeout": 60},
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

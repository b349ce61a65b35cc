"""The recommender A/B with LLMs (a Chat Completions server on loopback), asked after the
ticket opened: each arm's LLM answers its own tickets, a fallback keeps the ticket's arm."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from incident_responder.backends.recommenders.split import variant_of
from tests.conftest import ACME, MakeClient
from tests.helpers import DB_RUNBOOK, db_log
from tests.openai_fake import FakeOpenAI, answer, error, serve

ANSWER = answer("Database is refusing connections.", [("Restart the pooler", "db")])


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    yield from serve()


def _llm(fake: FakeOpenAI, model: str) -> dict[str, object]:
    return {"kind": "openai", "base_url": fake.base_url, "api_key": "sk-test-123", "timeout": 5,
            "max_retries": 0, "model": model}  # fmt: skip


async def _settled(http: httpx.AsyncClient, ticket_id: str, within: float = 10.0) -> dict[str, object]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        ticket: dict[str, object] = (await http.get(f"/v1/tickets/{ticket_id}", headers=ACME)).json()
        if not ticket["recommendation_pending"]:
            return ticket
        assert asyncio.get_running_loop().time() < deadline, "the late recommendation never came"
        await asyncio.sleep(0.05)


async def test_two_llms_each_answer_the_tickets_of_their_arm(
    fake: FakeOpenAI, make_client: MakeClient
) -> None:
    fake.otherwise = ANSWER
    share = 0.5
    async with make_client(
        recommender=_llm(fake, "m-a"), experiment={"b_share": share, "recommender_b": _llm(fake, "m-b")}
    ) as http:
        await http.put("/v1/runbooks/db", json={"title": "DB refused", "content": DB_RUNBOOK}, headers=ACME)
        logs = {f"svc{n}": db_log(n) for n in range(12)}
        opened = {}
        for service, log in logs.items():
            r = await http.post("/v1/incidents", json={"service": service, "log": log}, headers=ACME)
            assert r.status_code == 201, r.text
            rec = r.json()["recommendation"]
            # At once: the in-process stand-in, already marked with the ticket's arm.
            assert rec["source"] == "offline-extractive" and rec["variant"] == variant_of(log, share)
            opened[service] = r.json()["ticket_id"]
        expected = {service: variant_of(log, share) for service, log in logs.items()}
        assert set(expected.values()) == {"A", "B"}, "the logs should land in both arms"
        for service, ticket_id in opened.items():
            rec = (await _settled(http, ticket_id))["recommendation"]
            assert isinstance(rec, dict)
            model = "m-a" if expected[service] == "A" else "m-b"
            assert (rec["source"], rec["variant"]) == (f"llm:{model}", expected[service])
            assert rec["steps"] == ["Restart the pooler [runbook: db]"]
        asked = sorted(r.body["model"] for r in fake.requests)
        assert asked == sorted("m-a" if v == "A" else "m-b" for v in expected.values())  # once each
        metrics = (await http.get("/metrics")).text
        b = sum(v == "B" for v in expected.values())
        assert f'ir_ab_recommendations_total{{variant="B"}} {float(b)}' in metrics
        assert f'ir_ab_recommendations_total{{variant="A"}} {float(len(logs) - b)}' in metrics


async def test_offline_a_against_an_llm_b_and_bs_fallback_keeps_the_arm(
    fake: FakeOpenAI, make_client: MakeClient
) -> None:
    async with make_client(experiment={"b_share": 1.0, "recommender_b": _llm(fake, "m-b")}) as http:
        await http.put("/v1/runbooks/db", json={"title": "DB refused", "content": DB_RUNBOOK}, headers=ACME)
        fake.script(ANSWER)
        first = (
            await http.post("/v1/incidents", json={"service": "a", "log": db_log(1)}, headers=ACME)
        ).json()
        assert first["recommendation"]["variant"] == "B"
        rec = (await _settled(http, first["ticket_id"]))["recommendation"]
        assert isinstance(rec, dict) and (rec["source"], rec["variant"]) == ("llm:m-b", "B")

        fake.script(error(500))  # B's LLM fails: the ticket keeps the stand-in, still in arm B
        second = (
            await http.post("/v1/incidents", json={"service": "b", "log": db_log(2)}, headers=ACME)
        ).json()
        rec = (await _settled(http, second["ticket_id"]))["recommendation"]
        assert isinstance(rec, dict) and (rec["source"], rec["variant"]) == ("offline-extractive", "B")
        assert len(fake.requests) == 2

        r = await http.post(
            f"/v1/tickets/{second['ticket_id']}/feedback", json={"helpful": False}, headers=ACME
        )
        assert r.status_code == 201 and r.json()["votes"][0]["source"] == "offline-extractive"
        metrics = (await http.get("/metrics")).text
        assert 'ir_recommendation_votes_total{variant="B",vote="unhelpful"} 1.0' in metrics


async def test_an_llm_a_against_an_offline_b_never_asks_the_llm_for_bs_tickets(
    fake: FakeOpenAI, make_client: MakeClient
) -> None:
    async with make_client(
        recommender=_llm(fake, "m-a"),
        experiment={"b_share": 1.0, "recommender_b": {"kind": "offline", "max_steps": 1}},
    ) as http:
        await http.put("/v1/runbooks/db", json={"title": "DB refused", "content": DB_RUNBOOK}, headers=ACME)
        new = (await http.post("/v1/incidents", json={"service": "a", "log": db_log(1)}, headers=ACME)).json()
        rec = (await _settled(http, new["ticket_id"]))["recommendation"]
        assert isinstance(rec, dict)
        assert (rec["source"], rec["variant"], len(rec["steps"])) == ("offline-extractive", "B", 1)
        assert fake.requests == []


async def test_asked_before_answering_the_arm_answers_at_once(
    fake: FakeOpenAI, make_client: MakeClient
) -> None:
    async with make_client(
        recommender={"asynchronous": False},
        experiment={"b_share": 1.0, "recommender_b": _llm(fake, "m-b")},
    ) as http:
        await http.put("/v1/runbooks/db", json={"title": "DB refused", "content": DB_RUNBOOK}, headers=ACME)
        fake.script(ANSWER)
        new = (await http.post("/v1/incidents", json={"service": "a", "log": db_log(1)}, headers=ACME)).json()
        assert (new["recommendation"]["source"], new["recommendation"]["variant"]) == ("llm:m-b", "B")
        ticket = (await http.get(f"/v1/tickets/{new['ticket_id']}", headers=ACME)).json()
        assert ticket["recommendation_pending"] is False and ticket["recommendation"]["variant"] == "B"
        assert 'ir_ab_recommendations_total{variant="B"} 1.0' in (await http.get("/metrics")).text

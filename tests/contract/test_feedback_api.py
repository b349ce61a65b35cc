"""The recommender A/B through the API: a ticket's variant, votes on its recommendation
(``POST /v1/tickets/{id}/feedback``), and the counts per variant in /metrics."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from incident_responder.api.app import create_app
from incident_responder.container import Services
from incident_responder.models import FEEDBACK_KEPT
from incident_responder.settings import Settings
from tests.conftest import ACME, GLOBEX, MakeClient
from tests.helpers import DB_RUNBOOK, db_log, disk_log

# B is the offline recommender configured differently: at most one step (A writes two here).
EXPERIMENT = {"b_share": 1.0, "recommender_b": {"kind": "offline", "max_steps": 1}}


async def _open(http: httpx.AsyncClient, log: str, service: str = "api") -> dict[str, object]:
    r = await http.post("/v1/incidents", json={"service": service, "log": log}, headers=ACME)
    assert r.status_code == 201, r.text
    body: dict[str, object] = r.json()
    return body


async def test_a_ticket_of_variant_b_collects_votes_counted_per_variant(make_client: MakeClient) -> None:
    async with make_client(experiment=EXPERIMENT) as http:
        await http.put("/v1/runbooks/db", json={"title": "DB refused", "content": DB_RUNBOOK}, headers=ACME)
        new = await _open(http, db_log(1))
        rec = new["recommendation"]
        assert isinstance(rec, dict)
        assert rec["variant"] == "B" and rec["source"] == "offline-extractive" and len(rec["steps"]) == 1
        ticket_id = new["ticket_id"]
        ticket = (await http.get(f"/v1/tickets/{ticket_id}", headers=ACME)).json()
        assert ticket["recommendation"]["variant"] == "B"

        url = f"/v1/tickets/{ticket_id}/feedback"
        r = await http.post(url, json={"helpful": True, "comment": "spot on", "author": "ana"}, headers=ACME)
        assert r.status_code == 201, r.text
        voted = r.json()
        assert voted["ticket_id"] == ticket_id and voted["variant"] == "B"
        assert (voted["helpful_votes"], voted["unhelpful_votes"]) == (1, 0)
        (vote,) = voted["votes"]
        assert vote["helpful"] is True and vote["comment"] == "spot on" and vote["author"] == "ana"
        assert vote["variant"] == "B" and vote["source"] == "offline-extractive" and vote["created_at"]
        r = await http.post(url, json={"helpful": False}, headers=ACME)
        assert r.status_code == 201 and r.json()["votes"][0]["comment"] is None

        listed = (await http.get(url, headers=ACME)).json()
        assert (listed["helpful_votes"], listed["unhelpful_votes"]) == (1, 1)
        assert [v["helpful"] for v in listed["votes"]] == [True, False]  # stored, oldest first

        metrics = (await http.get("/metrics")).text
        assert 'ir_ab_recommendations_total{variant="B"} 1.0' in metrics
        assert 'ir_ab_recommendations_total{variant="A"} 0.0' in metrics
        assert 'ir_recommendation_votes_total{variant="B",vote="helpful"} 1.0' in metrics
        assert 'ir_recommendation_votes_total{variant="B",vote="unhelpful"} 1.0' in metrics
        assert 'ir_recommendation_votes_total{variant="A",vote="helpful"} 0.0' in metrics
        assert "/v1/tickets/{ticket_id}/feedback" in metrics  # the route is counted by its template


async def test_without_an_experiment_recommendations_have_no_variant(make_client: MakeClient) -> None:
    async with make_client() as http:
        await http.put("/v1/runbooks/db", json={"title": "DB refused", "content": DB_RUNBOOK}, headers=ACME)
        new = await _open(http, db_log(1))
        rec = new["recommendation"]
        assert isinstance(rec, dict) and rec["variant"] is None and len(rec["steps"]) == 2
        r = await http.post(f"/v1/tickets/{new['ticket_id']}/feedback", json={"helpful": True}, headers=ACME)
        assert r.status_code == 201 and r.json()["variant"] is None
        metrics = (await http.get("/metrics")).text
        assert 'ir_recommendation_votes_total{variant="none",vote="helpful"} 1.0' in metrics
        assert 'ir_ab_recommendations_total{variant="A"} 0.0' in metrics


async def test_feedback_errors_have_the_contract_shape(make_client: MakeClient) -> None:
    async with make_client(experiment=EXPERIMENT) as http:
        await http.put("/v1/runbooks/db", json={"title": "DB refused", "content": DB_RUNBOOK}, headers=ACME)
        ticket_id = (await _open(http, db_log(1)))["ticket_id"]
        url = f"/v1/tickets/{ticket_id}/feedback"

        for unknown in ("/v1/tickets/tkt_nope/feedback", url):
            headers = GLOBEX if unknown == url else ACME  # another tenant's ticket is unknown too
            for method in ("POST", "GET"):
                r = await http.request(method, unknown, json={"helpful": True}, headers=headers)
                assert r.status_code == 404, r.text
                assert r.json()["error"]["code"] == "not_found"

        for bad in (
            {},
            {"helpful": "yes"},
            {"helpful": 1},
            {"helpful": None},
            {"helpful": True, "stars": 5},
            {"helpful": True, "comment": "x" * 2001},
            {"helpful": True, "comment": "bell \x07"},
            {"helpful": True, "author": " "},
            {"helpful": True, "author": "a" * 201},
        ):
            r = await http.post(url, json=bad, headers=ACME)
            assert r.status_code == 422, (bad, r.text)
            assert r.json()["error"]["code"] == "invalid_input"
        r = await http.post(url, content=b"{", headers={**ACME, "Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
        r = await http.post(url, json={"helpful": False, "comment": "y" * 2000}, headers=ACME)
        assert r.status_code == 201 and len(r.json()["votes"][0]["comment"]) == 2000
        assert (await http.get(url, headers=ACME)).json()[
            "unhelpful_votes"
        ] == 1  # refused votes left no trace

        # A ticket with nothing to recommend from (no runbook fits) has no recommendation to vote on.
        bare = await _open(http, disk_log(1), service="disk")
        assert bare["recommendation"] is None
        r = await http.post(f"/v1/tickets/{bare['ticket_id']}/feedback", json={"helpful": True}, headers=ACME)
        assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"


async def test_a_ticket_keeps_its_newest_votes_and_exact_counts(
    make_settings: Callable[..., Settings], make_services: Callable[..., Services]
) -> None:
    settings = make_settings(experiment=EXPERIMENT)
    services = make_services(settings)
    app = create_app(settings, services=services)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        await http.put("/v1/runbooks/db", json={"title": "DB refused", "content": DB_RUNBOOK}, headers=ACME)
        ticket_id = str((await _open(http, db_log(1)))["ticket_id"])
    for i in range(FEEDBACK_KEPT + 5):
        services.desk.feedback("acme", ticket_id, helpful=i % 3 != 0, comment=f"vote {i}", author=None)
    ticket, _ = services.tickets.get("acme", ticket_id)
    assert len(ticket.feedback) == FEEDBACK_KEPT
    assert [v.comment for v in ticket.feedback[:2]] == ["vote 5", "vote 6"]  # the oldest went first
    assert ticket.feedback[-1].comment == f"vote {FEEDBACK_KEPT + 4}"
    assert ticket.helpful_votes + ticket.unhelpful_votes == FEEDBACK_KEPT + 5
    assert ticket.unhelpful_votes == len(range(0, FEEDBACK_KEPT + 5, 3))

"""The incident endpoints through the real ASGI app, model and stores."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from incident_responder.settings import Settings
from tests.conftest import ACME, GLOBEX, MakeClient
from tests.helpers import DB_RUNBOOK, DISK_RUNBOOK, db_log, disk_log, tls_log


async def _load_runbooks(client: httpx.AsyncClient, headers: dict[str, str] = ACME) -> None:
    for rid, content in (("db-refused", DB_RUNBOOK), ("disk-full", DISK_RUNBOOK)):
        title = content.splitlines()[0].lstrip("# ")
        r = await client.put(
            f"/v1/runbooks/{rid}", json={"title": title, "content": content}, headers=headers
        )
        assert r.status_code in (200, 201), r.text


async def _post(
    client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str] = ACME
) -> httpx.Response:
    return await client.post("/v1/incidents", json=body, headers=headers)


async def test_new_then_existing_then_regression(client: httpx.AsyncClient) -> None:
    await _load_runbooks(client)
    first = await _post(client, {"service": "payments-api", "log": db_log(1), "severity": "critical"})
    assert first.status_code == 201, first.text
    new = first.json()
    assert new["status"] == "new"
    assert new["ticket_id"].startswith("tkt_") and new["incident_id"].startswith("inc_")
    assert new["matched_ticket_id"] is None and new["similarity"] is None
    assert new["runbooks"][0]["id"] == "db-refused"
    assert new["recommendation"]["steps"], new["recommendation"]
    assert "db-refused" in " ".join(new["recommendation"]["steps"])

    again = await _post(client, {"service": "payments-api", "log": db_log(2)})
    assert again.status_code == 200, again.text
    dup = again.json()
    assert dup["status"] == "existing"
    assert dup["ticket_id"] == dup["matched_ticket_id"] == new["ticket_id"]
    assert 0.0 < dup["similarity"] <= 1.0
    assert dup["match"]["method"] in ("fingerprint", "template", "semantic")

    resolved = await client.post(
        f"/v1/tickets/{new['ticket_id']}/resolve", json={"resolution": "restarted pgbouncer"}, headers=ACME
    )
    assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"

    back = (await _post(client, {"service": "payments-api", "log": db_log(3)})).json()
    assert back["status"] == "regression" and back["ticket_id"] == new["ticket_id"]
    ticket = (await client.get(f"/v1/tickets/{new['ticket_id']}", headers=ACME)).json()
    assert ticket["status"] == "open"
    assert ticket["occurrences"] == 3 and ticket["regressions"] == 1
    kinds = [c["kind"] for c in ticket["comments"]]
    assert kinds.count("occurrence") == 2 and kinds.count("regression") == 1 and "resolution" in kinds


async def test_different_incident_and_different_service_open_new_tickets(client: httpx.AsyncClient) -> None:
    a = (await _post(client, {"service": "payments-api", "log": db_log(1)})).json()
    b = (await _post(client, {"service": "payments-api", "log": disk_log(1)})).json()
    c = (await _post(client, {"service": "billing", "log": db_log(1)})).json()
    assert [a["status"], b["status"], c["status"]] == ["new", "new", "new"]
    assert len({a["ticket_id"], b["ticket_id"], c["ticket_id"]}) == 3


async def test_get_incident_shows_outcome(client: httpx.AsyncClient) -> None:
    posted = (await _post(client, {"service": "svc", "log": tls_log(1)})).json()
    got = await client.get(f"/v1/incidents/{posted['incident_id']}", headers=ACME)
    assert got.status_code == 200 and got.json() == posted
    assert (await client.get(f"/v1/incidents/{posted['incident_id']}", headers=GLOBEX)).status_code == 404
    assert (await client.get("/v1/incidents/inc_nope", headers=ACME)).status_code == 404


async def test_batch_matches_one_by_one_semantics(client: httpx.AsyncClient) -> None:
    logs = [db_log(1), db_log(2), disk_log(1), db_log(3), disk_log(2), tls_log(1)]
    r = await client.post(
        "/v1/incidents/batch", json={"incidents": [{"service": "api", "log": x} for x in logs]}, headers=ACME
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == ["new", "existing", "new", "existing", "existing", "new"]
    assert results[1]["ticket_id"] == results[0]["ticket_id"] == results[3]["ticket_id"]
    assert results[4]["ticket_id"] == results[2]["ticket_id"]


async def test_concurrent_identical_incidents_make_one_ticket(client: httpx.AsyncClient) -> None:
    replies = await asyncio.gather(
        *(_post(client, {"service": "storm", "log": db_log(i)}) for i in range(25))
    )
    bodies = [r.json() for r in replies]
    assert sorted(r.status_code for r in replies) == [200] * 24 + [201]
    assert len({b["ticket_id"] for b in bodies}) == 1
    ticket = (await client.get(f"/v1/tickets/{bodies[0]['ticket_id']}", headers=ACME)).json()
    assert ticket["occurrences"] == 25


async def test_idempotency_replay_and_conflict(client: httpx.AsyncClient) -> None:
    body = {"service": "api", "log": db_log(5)}
    headers = {**ACME, "Idempotency-Key": "k-1"}
    first = await client.post("/v1/incidents", json=body, headers=headers)
    replay = await client.post("/v1/incidents", json=body, headers=headers)
    assert first.status_code == replay.status_code == 201
    assert first.json() == replay.json()
    ticket = (await client.get(f"/v1/tickets/{first.json()['ticket_id']}", headers=ACME)).json()
    assert ticket["occurrences"] == 1
    other = await client.post("/v1/incidents", json={"service": "api", "log": disk_log(1)}, headers=headers)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_conflict"
    # Keys are per tenant: another tenant may use the same key for its own request.
    theirs = await client.post("/v1/incidents", json=body, headers={**GLOBEX, "Idempotency-Key": "k-1"})
    assert theirs.status_code == 201 and theirs.json()["ticket_id"] != first.json()["ticket_id"]


async def test_concurrent_requests_with_one_key_apply_once(client: httpx.AsyncClient) -> None:
    body = {"service": "api", "log": tls_log(3)}
    headers = {**ACME, "Idempotency-Key": "same"}
    replies = await asyncio.gather(
        *(client.post("/v1/incidents", json=body, headers=headers) for _ in range(5))
    )
    assert {r.status_code for r in replies} == {201}
    assert len({json.dumps(r.json(), sort_keys=True) for r in replies}) == 1
    tickets = (await client.get("/v1/tickets", headers=ACME)).json()["tickets"]
    assert len(tickets) == 1 and tickets[0]["occurrences"] == 1


async def test_naive_mode_gives_the_same_outcomes(
    make_client: MakeClient,
) -> None:
    async with make_client(performance={"naive": True}) as http:
        first = (
            await http.post("/v1/incidents", json={"service": "a", "log": db_log(1)}, headers=ACME)
        ).json()
        again = (
            await http.post("/v1/incidents", json={"service": "a", "log": db_log(2)}, headers=ACME)
        ).json()
        other = (
            await http.post("/v1/incidents", json={"service": "a", "log": disk_log(1)}, headers=ACME)
        ).json()
    assert first["status"] == "new" and other["status"] == "new"
    # Without the fingerprint fast path the same template is found by search instead.
    assert again["status"] == "existing" and again["ticket_id"] == first["ticket_id"]
    assert again["match"]["method"] in ("template", "semantic")


async def test_a_ticket_shows_its_newest_occurrences_and_counts_every_one(
    make_client: MakeClient,
) -> None:
    async with make_client(occurrence_comments=2) as http:
        bodies = [
            (await http.post("/v1/incidents", json={"service": "db", "log": db_log(i)}, headers=ACME)).json()
            for i in range(5)
        ]
        assert len({b["ticket_id"] for b in bodies}) == 1
        ticket = (await http.get(f"/v1/tickets/{bodies[0]['ticket_id']}", headers=ACME)).json()
        assert ticket["occurrences"] == 5
        occurrences = [c for c in ticket["comments"] if c["kind"] == "occurrence"]
        assert [c["incident_id"] for c in occurrences] == [b["incident_id"] for b in bodies[-2:]]
        # the reports whose comments were dropped are still there, each as it was answered
        first = (await http.get(f"/v1/incidents/{bodies[0]['incident_id']}", headers=ACME)).json()
        assert first["ticket_id"] == bodies[0]["ticket_id"] and first["status"] == "new"


def test_the_occurrence_comments_setting_defaults_to_the_desks_and_refuses_zero(
    make_settings: Callable[..., Settings],
) -> None:
    from pydantic import ValidationError

    from incident_responder.pipeline.ticketing import MAX_OCCURRENCE_COMMENTS

    assert make_settings().occurrence_comments == MAX_OCCURRENCE_COMMENTS
    with pytest.raises(ValidationError):
        make_settings(occurrence_comments=0)

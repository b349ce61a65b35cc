"""Tickets (get, list, comment, resolve), runbooks (CRUD) and operations endpoints."""

from __future__ import annotations

import httpx

from tests.conftest import ACME, GLOBEX
from tests.helpers import DB_RUNBOOK, DISK_RUNBOOK, db_log, disk_log, tls_log


async def test_list_filters_and_cursor(client: httpx.AsyncClient) -> None:
    made = []
    for svc, log in (
        ("a", db_log(1)),
        ("a", disk_log(1)),
        ("b", db_log(1)),
        ("b", tls_log(1)),
        ("c", disk_log(1)),
    ):
        made.append(
            (await client.post("/v1/incidents", json={"service": svc, "log": log}, headers=ACME)).json()
        )
    await client.post(f"/v1/tickets/{made[1]['ticket_id']}/resolve", headers=ACME)

    seen, cursor = [], None
    while True:
        url = "/v1/tickets?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await client.get(url, headers=ACME)).json()
        assert len(page["tickets"]) <= 2
        seen += [t["ticket_id"] for t in page["tickets"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [m["ticket_id"] for m in made]  # oldest first, each exactly once

    only_a = (await client.get("/v1/tickets?service=a", headers=ACME)).json()["tickets"]
    assert {t["ticket_id"] for t in only_a} == {made[0]["ticket_id"], made[1]["ticket_id"]}
    open_a = (await client.get("/v1/tickets?service=a&status=open", headers=ACME)).json()["tickets"]
    assert [t["ticket_id"] for t in open_a] == [made[0]["ticket_id"]]
    resolved = (await client.get("/v1/tickets?status=resolved", headers=ACME)).json()["tickets"]
    assert [t["ticket_id"] for t in resolved] == [made[1]["ticket_id"]]
    assert (await client.get("/v1/tickets", headers=GLOBEX)).json() == {"tickets": [], "next_cursor": None}


async def test_ticket_shape_and_comments(client: httpx.AsyncClient) -> None:
    posted = (
        await client.post(
            "/v1/incidents",
            json={
                "service": "api",
                "log": db_log(1),
                "title": "DB down",
                "labels": {"team": "core"},
                "severity": "high",
            },
            headers=ACME,
        )
    ).json()
    tid = posted["ticket_id"]
    r = await client.post(
        f"/v1/tickets/{tid}/comments", json={"author": "alice", "body": "looking"}, headers=ACME
    )
    assert r.status_code == 201
    ticket = (await client.get(f"/v1/tickets/{tid}", headers=ACME)).json()
    for field in (
        "ticket_id",
        "status",
        "service",
        "title",
        "created_at",
        "updated_at",
        "occurrences",
        "regressions",
        "comments",
        "runbooks",
        "recommendation",
    ):
        assert field in ticket
    assert (
        ticket["title"] == "DB down" and ticket["severity"] == "high" and ticket["labels"] == {"team": "core"}
    )
    assert ticket["comments"][-1]["author"] == "alice" and ticket["comments"][-1]["body"] == "looking"
    bad = await client.post(f"/v1/tickets/{tid}/comments", json={"author": "", "body": "x"}, headers=ACME)
    assert bad.status_code == 422


async def test_runbook_crud(client: httpx.AsyncClient) -> None:
    body = {
        "title": "Database connection refused",
        "content": DB_RUNBOOK,
        "services": ["api"],
        "tags": ["db"],
    }
    created = await client.put("/v1/runbooks/db-refused", json=body, headers=ACME)
    assert created.status_code == 201 and created.json()["id"] == "db-refused"
    updated = await client.put("/v1/runbooks/db-refused", json={**body, "title": "DB refused"}, headers=ACME)
    assert updated.status_code == 200
    got = (await client.get("/v1/runbooks/db-refused", headers=ACME)).json()
    assert got["title"] == "DB refused" and got["content"] == DB_RUNBOOK and got["tags"] == ["db"]
    assert got["created_at"] == created.json()["created_at"]
    await client.put(
        "/v1/runbooks/disk-full", json={"title": "Disk full", "content": DISK_RUNBOOK}, headers=ACME
    )
    listed = (await client.get("/v1/runbooks", headers=ACME)).json()["runbooks"]
    assert [r["id"] for r in listed] == ["db-refused", "disk-full"]
    assert (await client.get("/v1/runbooks", headers=GLOBEX)).json()["runbooks"] == []
    assert (await client.get("/v1/runbooks/db-refused", headers=GLOBEX)).status_code == 404

    assert (await client.delete("/v1/runbooks/db-refused", headers=GLOBEX)).status_code == 404
    assert (await client.delete("/v1/runbooks/db-refused", headers=ACME)).status_code == 204
    assert (await client.get("/v1/runbooks/db-refused", headers=ACME)).status_code == 404
    # A deleted runbook is no longer retrieved for new incidents.
    r = (await client.post("/v1/incidents", json={"service": "api", "log": db_log(1)}, headers=ACME)).json()
    assert "db-refused" not in [rb["id"] for rb in r["runbooks"]]


async def test_runbooks_are_tenant_scoped_in_retrieval(client: httpx.AsyncClient) -> None:
    await client.put(
        "/v1/runbooks/disk-full", json={"title": "Disk full", "content": DISK_RUNBOOK}, headers=GLOBEX
    )
    mine = (
        await client.post("/v1/incidents", json={"service": "api", "log": disk_log(1)}, headers=ACME)
    ).json()
    theirs = (
        await client.post("/v1/incidents", json={"service": "api", "log": disk_log(1)}, headers=GLOBEX)
    ).json()
    assert mine["runbooks"] == [] and mine["recommendation"] is None
    assert theirs["runbooks"][0]["id"] == "disk-full"


async def test_operations_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "alive"}
    assert (await client.get("/readyz")).status_code == 200
    await client.post("/v1/incidents", json={"service": "api", "log": db_log(1)}, headers=ACME)
    text = (await client.get("/metrics")).text
    assert 'ir_incidents_total{service="api",status="new"} 1.0' in text
    assert "ir_stage_seconds_bucket" in text

"""Every endpoint, called with another tenant's ids, answers 404 and leaks nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from tests.conftest import ACME, GLOBEX, MakeClient
from tests.helpers import DB_RUNBOOK, db_log


async def test_foreign_ids_are_404_everywhere_and_lists_do_not_leak(client: httpx.AsyncClient) -> None:
    await client.put("/v1/runbooks/db-refused", json={"title": "DB", "content": DB_RUNBOOK}, headers=ACME)
    mine = (
        await client.post("/v1/incidents", json={"service": "api", "log": db_log(1)}, headers=ACME)
    ).json()
    tid, iid = mine["ticket_id"], mine["incident_id"]
    calls = [
        ("GET", f"/v1/tickets/{tid}", None),
        ("POST", f"/v1/tickets/{tid}/comments", {"author": "mallory", "body": "hi"}),
        ("POST", f"/v1/tickets/{tid}/resolve", {"resolution": "nope"}),
        ("GET", f"/v1/incidents/{iid}", None),
        ("GET", "/v1/runbooks/db-refused", None),
        ("DELETE", "/v1/runbooks/db-refused", None),
    ]
    for method, url, body in calls:
        r = await client.request(method, url, json=body, headers=GLOBEX)
        assert r.status_code == 404, (method, url, r.text)
        assert "acme" not in r.text.lower()
    assert (await client.get("/v1/tickets", headers=GLOBEX)).json()["tickets"] == []
    assert (await client.get("/v1/tickets?service=api", headers=GLOBEX)).json()["tickets"] == []
    assert (await client.get("/v1/runbooks", headers=GLOBEX)).json()["runbooks"] == []
    # Search is scoped too: the same log from the other tenant is new for it, with none of acme's runbooks.
    theirs = (
        await client.post("/v1/incidents", json={"service": "api", "log": db_log(2)}, headers=GLOBEX)
    ).json()
    assert theirs["status"] == "new" and theirs["ticket_id"] != tid and theirs["runbooks"] == []
    # Metrics carry no tenant label (bounded cardinality, no leak).
    assert (
        "acme" not in (await client.get("/metrics")).text
        and "globex" not in (await client.get("/metrics")).text
    )
    # And acme's ticket is untouched.
    ticket = (await client.get(f"/v1/tickets/{tid}", headers=ACME)).json()
    assert ticket["status"] == "open" and ticket["occurrences"] == 1 and len(ticket["comments"]) == 1
    assert (await client.get("/v1/runbooks/db-refused", headers=ACME)).status_code == 200


async def test_invalid_utf8_and_wrong_content_are_refused(client: httpx.AsyncClient) -> None:
    headers = {**ACME, "Content-Type": "application/json"}
    bad = await client.post("/v1/incidents", content=b'{"service":"a","log":"\xff\xfe"}', headers=headers)
    assert bad.status_code in (400, 422) and bad.json()["error"]["code"] in ("bad_request", "invalid_input")
    # Log text is data, never a template: format and template syntax come back verbatim.
    log = "{0.__class__} %s %(x)s ${jndi:ldap://x} {{7*7}}"
    r = (await client.post("/v1/incidents", json={"service": "a", "log": log}, headers=ACME)).json()
    ticket = (await client.get(f"/v1/tickets/{r['ticket_id']}", headers=ACME)).json()
    assert ticket["comments"][0]["body"] == log


async def test_api_key_never_appears_in_errors_or_logs(
    client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    await client.post("/v1/incidents", json={"service": "a", "log": "x" * 20_000}, headers=ACME)
    await client.post(
        "/v1/incidents", json={"service": "a", "log": db_log(1)}, headers={"X-API-Key": "acme-key-12"}
    )
    out = capsys.readouterr()
    assert "acme-key-123" not in out.out + out.err and "acme-key-12" not in out.out + out.err


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def test_hashed_key_file_rotates_without_restart(tmp_path: Path, make_client: MakeClient) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"# tenant:sha256(key)\nacme:{_digest('old-key-123456')}\n")
    async with make_client(api_keys="", api_keys_file=keys) as http:
        assert (await http.get("/v1/tickets", headers={"X-API-Key": "old-key-123456"})).status_code == 200
        keys.write_text(f"acme:{_digest('new-key-654321')}\n")
        import os

        os.utime(keys, ns=(1, 2))  # a different mtime even within the same clock tick
        assert (await http.get("/v1/tickets", headers={"X-API-Key": "old-key-123456"})).status_code == 401
        assert (await http.get("/v1/tickets", headers={"X-API-Key": "new-key-654321"})).status_code == 200
        keys.write_text("garbage line\n")  # a broken file keeps the last good keys
        os.utime(keys, ns=(3, 4))
        assert (await http.get("/v1/tickets", headers={"X-API-Key": "new-key-654321"})).status_code == 200


async def test_rate_limits_per_key_and_tenant(
    make_client: MakeClient,
) -> None:
    async with make_client(
        api_keys="acme:acme-key-123,acme:acme-key-789,globex:globex-key-456",
        rate_limit={"per_key": "3/minute", "per_tenant": "4/minute"},
    ) as http:
        codes = [(await http.get("/v1/runbooks", headers=ACME)).status_code for _ in range(6)]
        # the key's budget; its own refusals cost the tenant nothing
        assert codes == [200, 200, 200, 429, 429, 429]
        other_key = {"X-API-Key": "acme-key-789"}
        assert (await http.get("/v1/runbooks", headers=other_key)).status_code == 200  # the tenant's 4th
        limited = await http.get("/v1/runbooks", headers=other_key)
        assert limited.status_code == 429  # the tenant's budget (4)
        assert limited.json()["error"]["code"] == "rate_limited" and int(limited.headers["Retry-After"]) >= 1
        assert (await http.get("/v1/runbooks", headers=GLOBEX)).status_code == 200  # other tenants unaffected
        assert "ir_rate_limited_total 4.0" in (await http.get("/metrics")).text


async def test_a_batch_costs_its_number_of_incidents(make_client: MakeClient) -> None:
    async with make_client(rate_limit={"per_key": "10/minute", "per_tenant": ""}) as http:
        batch = {"incidents": [{"service": "api", "log": db_log(i)} for i in range(8)]}
        assert (await http.post("/v1/incidents/batch", json=batch, headers=ACME)).status_code == 200
        refused = await http.post("/v1/incidents/batch", json=batch, headers=ACME)  # 16 > 10
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
        small = {"incidents": batch["incidents"][:2]}
        assert (await http.post("/v1/incidents/batch", json=small, headers=ACME)).status_code == 200
        assert (await http.get("/v1/runbooks", headers=ACME)).status_code == 429  # 10 used


async def test_failed_authentications_are_limited_per_client_address(make_client: MakeClient) -> None:
    async with make_client(rate_limit={"failed_auth_per_address": "3/minute"}) as http:
        wrong = {"X-API-Key": "not-a-key-000"}
        codes = [(await http.get("/v1/runbooks", headers=wrong)).status_code for _ in range(5)]
        assert codes == [401, 401, 401, 429, 429]
        refused = await http.get("/v1/runbooks", headers=ACME)  # even a good key, from that address
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1


async def test_tenant_label_only_when_asked(
    make_client: MakeClient,
) -> None:
    async with make_client(metrics={"tenant_label": True}) as http:
        await http.post("/v1/incidents", json={"service": "api", "log": db_log(1)}, headers=ACME)
        text = (await http.get("/metrics")).text
    assert 'ir_incidents_total{service="api",status="new",tenant="acme"} 1.0' in text

"""Alert sources through the real app: Alertmanager and Grafana bodies, lifecycle, limits."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ACME, GLOBEX, MakeClient

FIXTURES = Path(__file__).parent.parent / "fixtures" / "alerts"
BEARER = {"Authorization": "Bearer acme-key-123"}


def _fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())  # type: ignore[no-any-return]


def _alert(fp: str, *, name: str = "DiskFull", status: str = "firing", starts: str = "2026-12-03T10:00:00Z",
           ends: str = "0001-01-01T00:00:00Z", **labels: str) -> dict[str, Any]:  # fmt: skip
    return {
        "status": status,
        "labels": {"alertname": name, "job": "postgres", "severity": "critical", **labels},
        "annotations": {"summary": f"{name} on the database", "runbook_url": "https://rb.example/disk"},
        "startsAt": starts,
        "endsAt": ends,
        "generatorURL": "http://prometheus.example:9090/graph?g0.expr=x",
        "fingerprint": fp,
    }


def _body(*alerts: dict[str, Any]) -> dict[str, Any]:
    firing = any(a["status"] == "firing" for a in alerts)
    return {"version": "4", "status": "firing" if firing else "resolved", "receiver": "ir",
            "groupKey": "{}:{}", "alerts": list(alerts)}  # fmt: skip


async def _send(
    http: httpx.AsyncClient, *alerts: dict[str, Any], headers: dict[str, str] = BEARER
) -> list[Any]:
    r = await http.post("/v1/alerts/alertmanager", json=_body(*alerts), headers=headers)
    assert r.status_code == 200, r.text
    results: list[Any] = r.json()["results"]
    return results


async def _ticket(http: httpx.AsyncClient, ticket_id: str) -> dict[str, Any]:
    r = await http.get(f"/v1/tickets/{ticket_id}", headers=ACME)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_an_alertmanager_group_fires_and_resolves_its_ticket(client: httpx.AsyncClient) -> None:
    results = (await client.post("/v1/alerts/alertmanager", json=_fixture("alertmanager_group.json"),
                                 headers=BEARER)).json()["results"]  # fmt: skip
    firing, resolved = results
    assert firing["status"] == "new" and firing["ticket_id"].startswith("tkt_")
    assert resolved["status"] == "resolved" and resolved["ticket_id"] is None  # never fired here
    ticket = await _ticket(client, firing["ticket_id"])
    assert ticket["service"] == "orders-consumer" and ticket["severity"] == "critical"
    assert ticket["links"]["source"].startswith("http://prometheus.example.org:9090/graph")
    assert [a["alert"] for a in ticket["source_alerts"]] == ["alertmanager:c0ffee0000000003"]

    again = copy.deepcopy(_fixture("alertmanager_group.json"))
    again["alerts"][0].update(status="resolved", endsAt="2026-12-03T08:10:00Z")
    done = (await client.post("/v1/alerts/alertmanager", json=again, headers=BEARER)).json()["results"]
    assert done[0] == {**done[0], "status": "resolved", "ticket_id": firing["ticket_id"]}
    ticket = await _ticket(client, firing["ticket_id"])
    assert ticket["status"] == "resolved" and ticket["resolved_at"].startswith("2026-12-03T08:10:00")
    stored = (await client.get(f"/v1/incidents/{done[0]['incident_id']}", headers=ACME)).json()
    assert stored["status"] == "resolved" and stored["ticket_id"] == firing["ticket_id"]


async def test_the_source_fingerprint_wins_over_the_text(client: httpx.AsyncClient) -> None:
    (first,) = await _send(client, _alert("fp-1"))
    # Everything but the fingerprint changed (another name, labels, summary) and it started
    # again later: it joins the same ticket, as a new occurrence.
    other = _alert("fp-1", name="SomethingElseEntirely", team="storage", starts="2026-12-03T11:00:00Z")
    (second,) = await _send(client, other)
    assert second["status"] == "existing" and second["ticket_id"] == first["ticket_id"]
    assert second["match"]["method"] == "alert"
    ticket = await _ticket(client, first["ticket_id"])
    assert ticket["occurrences"] == 2
    assert len(ticket["source_alerts"]) == 1
    # ... and the same text under another tenant is another ticket
    (theirs,) = await _send(client, _alert("fp-1"), headers={"Authorization": "Bearer globex-key-456"})
    assert theirs["status"] == "new" and theirs["ticket_id"] != first["ticket_id"]
    assert (await client.get(f"/v1/tickets/{first['ticket_id']}", headers=GLOBEX)).status_code == 404


async def test_a_repeat_notification_adds_nothing(client: httpx.AsyncClient) -> None:
    (first,) = await _send(client, _alert("fp-r"))
    for _ in range(3):
        (repeat,) = await _send(client, _alert("fp-r"))
        assert repeat["status"] == "existing" and repeat["ticket_id"] == first["ticket_id"]
    ticket = await _ticket(client, first["ticket_id"])
    assert (
        ticket["occurrences"] == 1 and len([c for c in ticket["comments"] if c["kind"] == "occurrence"]) == 1
    )


@pytest.mark.parametrize(
    ("policy", "open_after_one", "open_after_both"),
    [("all", True, False), ("first", False, False), ("never", True, True)],
)
async def test_the_resolve_policy_decides_when_the_ticket_resolves(
    client: httpx.AsyncClient, policy: str, open_after_one: bool, open_after_both: bool
) -> None:
    r = await client.put("/v1/policy", json={"resolve": policy}, headers=ACME)
    assert r.status_code == 200 and r.json()["resolve"] == policy
    a, b = _alert("fp-a", instance="db-1"), _alert("fp-b", instance="db-2")
    first, second = await _send(client, a, b)
    assert first["ticket_id"] == second["ticket_id"]
    ticket_id = first["ticket_id"]
    # Alertmanager's group status says "firing" while one of its alerts resolved.
    mixed = _body({**a, "status": "resolved", "endsAt": "2026-12-03T10:05:00Z"}, b)
    results = (await client.post("/v1/alerts/alertmanager", json=mixed, headers=BEARER)).json()["results"]
    assert [x["status"] for x in results] == ["resolved", "existing"]
    assert ((await _ticket(client, ticket_id))["status"] == "open") is open_after_one
    await _send(client, {**b, "status": "resolved", "endsAt": "2026-12-03T10:06:00Z"})
    assert ((await _ticket(client, ticket_id))["status"] == "open") is open_after_both


async def test_firing_again_soon_after_resolving_is_flapping_not_a_regression(
    client: httpx.AsyncClient,
) -> None:
    (first,) = await _send(client, _alert("fp-f"))
    await _send(client, _alert("fp-f", status="resolved", ends="2026-12-03T10:05:00Z"))
    (again,) = await _send(client, _alert("fp-f", starts="2026-12-03T10:07:00Z"))
    assert again["status"] == "regression" and again["flapping"] is True
    ticket = await _ticket(client, first["ticket_id"])
    assert ticket["status"] == "open" and ticket["flapping"] is True and ticket["flaps"] == 1

    # With no flapping window, the same is a plain regression.
    await client.put("/v1/policy", json={"flapping_window": 0}, headers=ACME)
    await _send(
        client, _alert("fp-f", status="resolved", starts="2026-12-03T10:07:00Z", ends="2026-12-03T10:09:00Z")
    )
    (later,) = await _send(client, _alert("fp-f", starts="2026-12-03T10:30:00Z"))
    assert later["status"] == "regression" and later["flapping"] is False
    assert (await _ticket(client, first["ticket_id"]))["flapping"] is False


async def test_a_late_notification_never_reopens_a_resolved_ticket(client: httpx.AsyncClient) -> None:
    (first,) = await _send(client, _alert("fp-l", starts="2026-12-03T09:00:00Z", instance="db-1"))
    await client.post(f"/v1/tickets/{first['ticket_id']}/resolve", json={"resolution": "fixed"}, headers=ACME)
    # Another alert of the same kind that started before the resolution arrives late.
    (late,) = await _send(client, _alert("fp-l2", starts="2026-12-03T09:01:00Z", instance="db-9"))
    assert late["ticket_id"] == first["ticket_id"] and late["status"] == "existing"
    assert (await _ticket(client, first["ticket_id"]))["status"] == "resolved"


async def test_grafana_notifications_and_their_signature(client: httpx.AsyncClient) -> None:
    body = json.dumps(_fixture("grafana_firing.json")).encode()
    headers = {**BEARER, "Content-Type": "application/json"}
    r = await client.post("/v1/alerts/grafana", content=body, headers=headers)
    assert r.status_code == 200, r.text
    firing, resolved = r.json()["results"]
    assert firing["status"] == "new" and resolved["status"] == "resolved"
    ticket = await _ticket(client, firing["ticket_id"])
    assert ticket["links"]["dashboard"] == "https://grafana.example.org/d/abcd1234"
    assert ticket["links"]["runbook"] == "https://wiki.example.org/runbooks/checkout-latency"

    put = await client.put("/v1/policy", json={"grafana_secret": "grafana-signing-secret"}, headers=ACME)
    assert put.json()["grafana_secret"] == "********"
    unsigned = await client.post("/v1/alerts/grafana", content=body, headers=headers)
    assert unsigned.status_code == 401 and unsigned.json()["error"]["code"] == "unauthorized"
    signature = hmac.new(b"grafana-signing-secret", body, hashlib.sha256).hexdigest()
    signed = await client.post(
        "/v1/alerts/grafana", content=body, headers={**headers, "X-Grafana-Alerting-Signature": signature}
    )
    assert signed.status_code == 200, signed.text
    # Sending the masked secret back keeps it.
    await client.put("/v1/policy", json={"grafana_secret": "********", "resolve": "first"}, headers=ACME)
    assert (await client.post("/v1/alerts/grafana", content=body, headers=headers)).status_code == 401


async def test_bad_bodies_and_missing_keys(client: httpx.AsyncClient) -> None:
    url = "/v1/alerts/alertmanager"
    assert (await client.post(url, json=_body(_alert("x")))).status_code == 401
    bad = await client.post(url, content=b"{not json", headers={**BEARER, "Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"
    assert (await client.post(url, json={"version": "4"}, headers=BEARER)).status_code == 422
    assert (await client.post(url, json={"alerts": [{"labels": "x"}]}, headers=BEARER)).status_code == 422
    empty = await client.post(url, json={"alerts": [], "whatever": {"extra": 1}}, headers=BEARER)
    assert empty.status_code == 200 and empty.json() == {"results": []}


async def test_over_the_rate_limit_a_source_is_told_to_retry_not_refused(make_client: MakeClient) -> None:
    async with make_client(rate_limit={"per_key": "3/minute", "per_tenant": ""}) as http:
        statuses = []
        for i in range(3):
            r = await http.post("/v1/alerts/alertmanager", json=_body(_alert(f"fp-{i}")), headers=BEARER)
            statuses.append(r.status_code)
        assert statuses == [200, 200, 200]
        r = await http.post("/v1/alerts/alertmanager", json=_body(_alert("fp-9")), headers=BEARER)
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "rate_limited"
        # the same budget for our own API is a 429, as ever
        plain = await http.post("/v1/incidents", json={"service": "a", "log": "x failed"}, headers=ACME)
        assert plain.status_code == 429


async def test_too_many_alerts_in_one_notification(make_client: MakeClient) -> None:
    async with make_client(alerts={"max_per_request": 5}) as http:
        body = _body(*(_alert(f"fp-{i}", instance=f"db-{i}") for i in range(6)))
        r = await http.post("/v1/alerts/alertmanager", json=body, headers=BEARER)
        assert r.status_code == 422 and "alerts: at most 5" in r.json()["error"]["message"]


async def test_silenced_alerts_are_recorded_but_say_so(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/v1/silences",
        json={"services": ["postgres"], "labels": {"severity": "critical"}, "ends_at": "2099-01-01T00:00:00Z",
              "comment": "maintenance"},
        headers=ACME,
    )  # fmt: skip
    assert created.status_code == 201, created.text
    silence = created.json()
    assert silence["silence_id"].startswith("sil_") and silence["state"] == "active"
    (quiet,) = await _send(client, _alert("fp-s"))
    assert quiet["status"] == "new" and quiet["silenced"] is True
    assert (await _ticket(client, quiet["ticket_id"]))["notified"] is False
    (loud,) = await _send(client, _alert("fp-t", name="Other", severity="warning"))
    assert loud["silenced"] is False
    listed = (await client.get("/v1/silences", headers=ACME)).json()["silences"]
    assert [s["silence_id"] for s in listed] == [silence["silence_id"]]
    assert (await client.get(f"/v1/silences/{silence['silence_id']}", headers=GLOBEX)).status_code == 404
    assert (await client.delete(f"/v1/silences/{silence['silence_id']}", headers=ACME)).status_code == 204
    (after,) = await _send(client, _alert("fp-s2", instance="db-2"))
    assert after["silenced"] is False


@pytest.mark.parametrize(
    "body",
    [
        {"ends_at": "2020-01-01T00:00:00Z"},  # over already
        {"starts_at": "2099-01-02T00:00:00Z", "ends_at": "2099-01-01T00:00:00Z"},  # ends before it starts
        {"ends_at": "2099-01-01T00:00:00"},  # no time zone
        {"ends_at": "2099-01-01T00:00:00Z", "labels": {"bad key": "x"}},
        {"ends_at": "2099-01-01T00:00:00Z", "services": ["no spaces"]},
    ],
)
async def test_bad_silences_are_refused(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    r = await client.post("/v1/silences", json=body, headers=ACME)
    assert r.status_code == 422, r.text


async def test_the_policy_is_validated_and_defaults_fill_what_is_left_out(client: httpx.AsyncClient) -> None:
    default = (await client.get("/v1/policy", headers=ACME)).json()
    assert default["resolve"] == "all" and default["storm"] == {"reports": 1, "within": 300.0}
    for bad in ({"resolve": "sometimes"}, {"storm": {"reports": 0}}, {"unknown": 1}, {"flapping_window": -1}):
        assert (await client.put("/v1/policy", json=bad, headers=ACME)).status_code == 422
    set_ = (
        await client.put("/v1/policy", json={"storm_by_service": {"db": {"reports": 3}}}, headers=ACME)
    ).json()
    assert set_["storm_by_service"] == {"db": {"reports": 3, "within": 300.0}} and set_["resolve"] == "all"
    assert (await client.get("/v1/policy", headers=GLOBEX)).json()["storm_by_service"] == {}

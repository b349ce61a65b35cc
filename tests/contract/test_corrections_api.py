"""Explained decisions, and a person's merge and split of tickets (`/v1/tickets/{id}/merge|split`)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from incident_responder.container import Services
from incident_responder.ports import VectorFilter
from incident_responder.settings import Settings
from tests.conftest import ACME, GLOBEX
from tests.helpers import db_log, disk_log


def queue_log(queue: str, n: int = 1) -> str:
    """One message whose template differs only in the queue's name (a word): the template tier
    joins two queues' reports (one word in 16 tokens), a grouping a person may want undone."""
    return (
        f"2026-11-20T10:{n % 60:02d}:00Z ERROR dispatcher[{300 + n}]: worker pool drained with "
        f"{n} tasks pending on queue {queue} after reconnecting to broker mq-{n}.internal on port 5672"
    )


async def post(http: httpx.AsyncClient, service: str, log: str, headers: dict[str, str] = ACME) -> dict:
    r = await http.post("/v1/incidents", json={"service": service, "log": log}, headers=headers)
    assert r.status_code in (200, 201), r.text
    return r.json()


async def ticket(http: httpx.AsyncClient, ticket_id: str) -> dict:
    r = await http.get(f"/v1/tickets/{ticket_id}", headers=ACME)
    assert r.status_code == 200, r.text
    return r.json()


async def test_every_match_explains_itself(client: httpx.AsyncClient) -> None:
    first = await post(client, "q", queue_log("alpha", 1))
    assert first["status"] == "new" and first["fingerprint"]
    joined = await post(client, "q", queue_log("beta", 2))
    match = joined["match"]
    assert joined["ticket_id"] == first["ticket_id"] and match["method"] == "template"
    assert match["similarity"] >= match["threshold"] == 0.92
    assert "alpha" in match["template"] and "beta" in match["report_template"]
    assert set(match["differing_tokens"]) == {"-alpha", "+beta"}

    again = await post(client, "q", queue_log("beta", 3))
    assert again["match"]["method"] == "fingerprint" and again["match"]["threshold"] == 1.0
    assert again["match"]["differing_tokens"] == []

    why = (await ticket(client, first["ticket_id"]))["why"]
    assert len(why) == 3  # opened, joined by template, joined by fingerprint: one line per way
    assert why[0].startswith("opened by:")
    assert any(line.startswith("template 0.9") and "differs in -alpha +beta" in line for line in why)
    for n in range(4, 10):  # more of the same ways add no line
        await post(client, "q", queue_log("beta", n))
    assert len((await ticket(client, first["ticket_id"]))["why"]) == 3


async def test_merge_leads_both_tickets_forms_to_the_survivor(client: httpx.AsyncClient) -> None:
    db = await post(client, "api", db_log(1))
    disk = await post(client, "api", disk_log(1))
    await post(client, "api", disk_log(2))
    assert db["ticket_id"] != disk["ticket_id"]

    r = await client.post(
        f"/v1/tickets/{disk['ticket_id']}/merge", json={"into": db["ticket_id"]}, headers=ACME
    )
    assert r.status_code == 200, r.text
    survivor = r.json()
    assert survivor["ticket_id"] == db["ticket_id"] and survivor["merged_from"] == [disk["ticket_id"]]
    assert survivor["occurrences"] == 3
    merged = await ticket(client, disk["ticket_id"])  # its id keeps working
    assert merged["status"] == "merged" and merged["merged_into"] == db["ticket_id"]

    later = await post(client, "api", disk_log(3))  # a report that would have joined the merged one
    assert later["ticket_id"] == db["ticket_id"] and later["status"] == "existing"
    assert (await ticket(client, db["ticket_id"]))["occurrences"] == 4

    # merging again is a no-op; merging into a merged ticket or itself is refused
    again = await client.post(
        f"/v1/tickets/{disk['ticket_id']}/merge", json={"into": db["ticket_id"]}, headers=ACME
    )
    assert again.status_code == 200 and again.json()["occurrences"] == 4
    r = await client.post(
        f"/v1/tickets/{db['ticket_id']}/merge", json={"into": disk["ticket_id"]}, headers=ACME
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    r = await client.post(
        f"/v1/tickets/{db['ticket_id']}/merge", json={"into": db["ticket_id"]}, headers=ACME
    )
    assert r.status_code == 422
    r = await client.post(f"/v1/tickets/{db['ticket_id']}/merge", json={"into": "tkt_nope"}, headers=ACME)
    assert r.status_code == 404
    r = await client.post(f"/v1/tickets/{db['ticket_id']}/merge", json={"into": 3}, headers=ACME)
    assert r.status_code == 422
    # another tenant's ids are unknown
    r = await client.post(
        f"/v1/tickets/{disk['ticket_id']}/merge", json={"into": db["ticket_id"]}, headers=GLOBEX
    )
    assert r.status_code == 404
    merged_list = (await client.get("/v1/tickets?status=merged", headers=ACME)).json()["tickets"]
    assert [t["ticket_id"] for t in merged_list] == [disk["ticket_id"]]


async def test_merge_across_services(client: httpx.AsyncClient) -> None:
    api = await post(client, "api", db_log(1))
    worker = await post(client, "worker", db_log(2))
    assert api["ticket_id"] != worker["ticket_id"]  # services never share tickets by themselves
    r = await client.post(
        f"/v1/tickets/{worker['ticket_id']}/merge", json={"into": api["ticket_id"]}, headers=ACME
    )
    assert r.status_code == 200
    later = await post(client, "worker", db_log(3))
    assert later["ticket_id"] == api["ticket_id"]
    assert (await post(client, "api", db_log(4)))["ticket_id"] == api["ticket_id"]


async def test_split_moves_forms_and_forbids_them(client: httpx.AsyncClient) -> None:
    alpha = await post(client, "q", queue_log("alpha", 1))
    beta = await post(client, "q", queue_log("beta", 2))
    assert beta["ticket_id"] == alpha["ticket_id"]
    old_id = alpha["ticket_id"]

    r = await client.post(
        f"/v1/tickets/{old_id}/split", json={"incident_ids": [beta["incident_id"]]}, headers=ACME
    )
    assert r.status_code == 201, r.text
    new = r.json()
    assert new["ticket_id"] != old_id and new["split_from"] == old_id and new["occurrences"] == 1
    old = await ticket(client, old_id)
    assert old["occurrences"] == 1 and next(iter(old["split_off"].values()))["into"] == new["ticket_id"]
    record = (await client.get(f"/v1/incidents/{beta['incident_id']}", headers=ACME)).json()
    assert record["ticket_id"] == new["ticket_id"]

    assert (await post(client, "q", queue_log("beta", 3)))["ticket_id"] == new["ticket_id"]
    assert (await post(client, "q", queue_log("alpha", 4)))["ticket_id"] == old_id
    # a report like the split-off ones (one word off both) may not join the old ticket
    gamma = await post(client, "q", queue_log("gamma", 5))
    assert gamma["ticket_id"] == new["ticket_id"] and gamma["match"]["method"] == "correction"

    # what a split cannot do
    r = await client.post(
        f"/v1/tickets/{old_id}/split", json={"incident_ids": [alpha["incident_id"]]}, headers=ACME
    )
    assert r.status_code == 422  # every form of the ticket: nothing would be left
    r = await client.post(
        f"/v1/tickets/{old_id}/split", json={"incident_ids": [beta["incident_id"]]}, headers=ACME
    )
    assert r.status_code == 422  # not in this ticket any more
    r = await client.post(f"/v1/tickets/{old_id}/split", json={"incident_ids": []}, headers=ACME)
    assert r.status_code == 422
    r = await client.post(f"/v1/tickets/{old_id}/split", json={"incident_ids": ["inc_unknown"]}, headers=ACME)
    assert r.status_code == 422


@contextlib.asynccontextmanager
async def serving(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of an app on ``services``, which are closed after it (as on a shutdown)."""
    from incident_responder.api.app import create_app

    app = create_app(services.settings, services=services)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            yield http
    finally:
        services.close()


async def test_corrections_survive_a_restart_and_a_lost_index(
    make_settings: Callable[..., Settings], make_services: Callable[..., Services]
) -> None:
    from incident_responder.migration import reindex

    async with serving(make_services(make_settings())) as http:
        alpha = await post(http, "q", queue_log("alpha", 1))
        beta = await post(http, "q", queue_log("beta", 2))
        db = await post(http, "api", db_log(1))
        disk = await post(http, "api", disk_log(1))
        split = await http.post(
            f"/v1/tickets/{alpha['ticket_id']}/split",
            json={"incident_ids": [beta["incident_id"]]},
            headers=ACME,
        )
        new_id = split.json()["ticket_id"]
        await http.post(
            f"/v1/tickets/{disk['ticket_id']}/merge", json={"into": db["ticket_id"]}, headers=ACME
        )

    # the index is lost and rebuilt from the tickets alone
    services = make_services(make_settings())
    everything = VectorFilter({"tenant": "acme", "kind": "incident"})
    services.backends.index.delete(everything)
    assert services.backends.index.count(everything) == 0
    reindex(services)
    services.close()

    async with serving(make_services(make_settings())) as http:
        gamma = await post(http, "q", queue_log("gamma", 5))
        assert gamma["ticket_id"] == new_id and gamma["match"]["method"] == "correction"
        assert (await post(http, "api", disk_log(7)))["ticket_id"] == db["ticket_id"]
        assert (await post(http, "q", queue_log("alpha", 8)))["ticket_id"] == alpha["ticket_id"]


async def test_a_replica_that_remembers_the_old_ticket_decides_again(
    make_settings: Callable[..., Settings], make_services: Callable[..., Services]
) -> None:
    """Another replica's merge does not clear this one's memory of fingerprints: its next report
    is refused by the merged ticket and decided again, into the survivor."""
    from incident_responder.pipeline.corrections import Corrections

    services = make_services(make_settings())
    async with serving(services) as http:
        db = await post(http, "api", db_log(1))
        disk = await post(http, "api", disk_log(1))
        assert (await post(http, "api", disk_log(2)))["match"]["method"] == "fingerprint"  # remembered now
        elsewhere = Corrections(  # a replica of its own: it cannot reach this process's memory
            desk=services.desk,
            tickets=services.tickets,
            incidents=services.incidents,
            index=services.backends.index,
            objects=services.backends.objects,
        )
        elsewhere.merge("acme", disk["ticket_id"], db["ticket_id"])
        later = await post(http, "api", disk_log(3))
        assert later["ticket_id"] == db["ticket_id"]
        assert (await ticket(http, disk["ticket_id"]))["occurrences"] == 2  # nothing landed on it


async def test_an_interrupted_correction_is_finished_at_start_up(
    make_settings: Callable[..., Settings], make_services: Callable[..., Services]
) -> None:
    services = make_services(make_settings())
    async with serving(services) as http:
        db = await post(http, "api", db_log(1))
        disk = await post(http, "api", disk_log(1))
        # a crash right after the merge's intent was recorded
        intent = {"op": "merge", "ticket_id": disk["ticket_id"], "into": db["ticket_id"]}
        services.backends.objects.put(
            f"acme/corrections/{disk['ticket_id']}-{db['ticket_id']}.json", json.dumps(intent).encode()
        )
    async with serving(make_services(make_settings())) as http:
        assert (await ticket(http, disk["ticket_id"]))["status"] == "merged"
        assert (await ticket(http, db["ticket_id"]))["merged_from"] == [disk["ticket_id"]]
        assert (await post(http, "api", disk_log(5)))["ticket_id"] == db["ticket_id"]
    services = make_services(make_settings())
    assert services.backends.objects.list_keys("acme/corrections/") == []
    services.close()


@pytest.mark.parametrize("elsewhere", [False, True], ids=["here", "by-another-replica"])
async def test_merged_source_alerts_settle_the_survivor_and_a_merged_ticket_is_not_resolved(
    make_settings: Callable[..., Settings], make_services: Callable[..., Services], elsewhere: bool
) -> None:
    """Merged here, the alerts' links are rewritten; merged by another replica, this one's
    links still name the merged ticket, which passes the alerts on to the survivor."""
    from incident_responder.pipeline.corrections import Corrections
    from tests.contract.test_alerts_api import _alert, _send

    services = make_services(make_settings(notifications={"allow_private_targets": True}))
    async with serving(services) as http:
        r = await http.put(
            "/v1/notifications/channels/hook",
            json={"kind": "webhook", "url": "http://127.0.0.1:9/ir", "secret": "s" * 32},
            headers=ACME,
        )
        assert r.status_code in (200, 201), r.text
        (disk,) = await _send(http, _alert("aa01", name="DiskFull"))
        (cpu,) = await _send(http, _alert("bb02", name="CpuSaturated", job="api"))
        assert disk["ticket_id"] != cpu["ticket_id"]
        if elsewhere:
            merged_by = Corrections(
                desk=services.desk,
                tickets=services.tickets,
                incidents=services.incidents,
                index=services.backends.index,
                objects=services.backends.objects,
            ).merge("acme", cpu["ticket_id"], disk["ticket_id"])
            survivor = await ticket(http, merged_by.ticket_id)
        else:
            r = await http.post(
                f"/v1/tickets/{cpu['ticket_id']}/merge", json={"into": disk["ticket_id"]}, headers=ACME
            )
            assert r.status_code == 200
            survivor = r.json()
        assert {a["alert"] for a in survivor["source_alerts"]} == {"alertmanager:aa01", "alertmanager:bb02"}
        # the merged ticket's own alert fires again: the survivor; resolves: settles the survivor
        (again,) = await _send(
            http, _alert("bb02", name="CpuSaturated", job="api", starts="2026-12-03T10:05:00Z")
        )
        assert again["ticket_id"] == disk["ticket_id"]
        if elsewhere:  # this process's link still names the merged ticket
            link = services.backends.objects.get("acme/alerts/alertmanager/bb02.json")
            assert link is not None and json.loads(link.data)["ticket_id"] == cpu["ticket_id"]
        (ended,) = await _send(
            http,
            _alert(
                "bb02",
                name="CpuSaturated",
                job="api",
                status="resolved",
                starts="2026-12-03T10:05:00Z",
                ends="2026-12-03T10:09:00Z",
            ),
        )
        assert ended["ticket_id"] == disk["ticket_id"]
        assert (await ticket(http, disk["ticket_id"]))["status"] == "open"  # policy all: aa01 still firing
        await _send(http, _alert("aa01", status="resolved", ends="2026-12-03T10:10:00Z"))
        assert (await ticket(http, disk["ticket_id"]))["status"] == "resolved"
        merged = await ticket(http, cpu["ticket_id"])
        assert merged["status"] == "merged"
        r = await http.post(f"/v1/tickets/{cpu['ticket_id']}/resolve", headers=ACME)
        assert r.status_code == 409 and (await ticket(http, cpu["ticket_id"]))["status"] == "merged"
        events = await services.stages.run("pump", lambda: services.events.pending("acme", 100))
        kinds = [(e.ticket_id, e.kind, e.merged_into) for e in events]
        assert (cpu["ticket_id"], "merged", disk["ticket_id"]) in kinds


async def test_a_correction_whose_tickets_are_gone_is_abandoned_at_start_up(
    make_settings: Callable[..., Settings], make_services: Callable[..., Services]
) -> None:
    services = make_services(make_settings())
    async with serving(services) as http:
        await post(http, "api", db_log(1))
        intent = {"op": "split", "ticket_id": "tkt_gone", "into": "tkt_new", "fingerprints": ["f"]}
        services.backends.objects.put("acme/corrections/tkt_gone-tkt_new.json", json.dumps(intent).encode())
    services = make_services(make_settings())  # starts, drops the marker, serves
    assert services.backends.objects.list_keys("acme/corrections/") == []
    assert services.backends.objects.get("acme/tickets/tkt_new.json") is None
    services.close()


async def test_merging_a_split_off_ticket_back_undoes_the_split(client: httpx.AsyncClient) -> None:
    alpha = await post(client, "q", queue_log("alpha", 1))
    beta = await post(client, "q", queue_log("beta", 2))
    r = await client.post(
        f"/v1/tickets/{alpha['ticket_id']}/split", json={"incident_ids": [beta["incident_id"]]}, headers=ACME
    )
    new_id = r.json()["ticket_id"]
    r = await client.post(f"/v1/tickets/{new_id}/merge", json={"into": alpha["ticket_id"]}, headers=ACME)
    assert r.status_code == 200 and r.json()["split_off"] == {}
    again = await post(client, "q", queue_log("beta", 3))  # its form is the old ticket's again
    assert again["ticket_id"] == alpha["ticket_id"] and again["status"] == "existing"
    gamma = await post(client, "q", queue_log("gamma", 4))  # and nothing forbids its likes any more
    assert gamma["ticket_id"] == alpha["ticket_id"]

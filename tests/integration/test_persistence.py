"""Restarts, interrupted writes and kill -9: nothing acknowledged is lost, nothing half-written stays."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from incident_responder.container import Services
from incident_responder.ids import new_ticket_id
from incident_responder.models import IncidentReport
from incident_responder.pipeline.ticket_points import incident_point_id
from incident_responder.pipeline.ticketing import Draft, Occurrence
from incident_responder.ports import VectorFilter, VectorPoint
from incident_responder.settings import Settings
from tests.faults.flaky import Boom, crash
from tests.helpers import db_log, disk_log
from tests.servers import ServeProcess


async def test_state_survives_restart(
    make_services: Callable[..., Services], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    first = make_services(settings)
    created = await first.responder.handle("acme", IncidentReport(service="api", log=db_log(1)))
    first.close()

    second = make_services(settings)
    ticket, _ = second.tickets.get("acme", created.ticket_id or "")
    assert ticket.occurrences == 1
    again = await second.responder.handle("acme", IncidentReport(service="api", log=db_log(2)))
    assert again.status == "existing" and again.ticket_id == created.ticket_id
    assert second.incidents.get("acme", created.incident_id) == created


async def test_crash_between_ticket_and_vector_is_repaired_at_startup(
    make_services: Callable[..., Services], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    services = make_services(settings)
    norm = services.responder._normalizer.normalize(db_log(1))
    vector = services.backends.embedder.embed([norm.embed_text])[0]
    ticket_id = new_ticket_id()
    with pytest.raises(Boom):
        services.desk.open_many(
            "acme",
            [
                Draft(
                    "api",
                    ticket_id,
                    "t",
                    None,
                    {},
                    [
                        Occurrence(
                            "inc_x", db_log(1), norm.fingerprint, norm.template, norm.embed_text, vector
                        )
                    ],
                )
            ],
            before_vector=crash,
        )
    point = incident_point_id("acme", ticket_id, norm.fingerprint)
    assert services.tickets.exists("acme", ticket_id)
    assert not services.backends.index.exists(point)
    services.close()

    restarted = make_services(settings)
    assert restarted.backends.index.exists(point)
    assert restarted.metrics.reconciled._value.get() == 1
    result = await restarted.responder.handle("acme", IncidentReport(service="api", log=db_log(7)))
    assert result.status == "existing" and result.ticket_id == ticket_id


@pytest.mark.parametrize("marker", ["group", "one ticket"])
async def test_vector_without_ticket_is_removed_at_startup(
    make_services: Callable[..., Services], make_settings: Callable[..., Settings], marker: str
) -> None:
    settings = make_settings()
    services = make_services(settings)
    norm = services.responder._normalizer.normalize(disk_log(1))
    orphan = new_ticket_id()
    # The state a crash leaves when the ticket write itself never landed: under a group's
    # marker, or under a marker of its own as versions before group opening wrote them.
    from incident_responder.repositories import PendingMarkers

    if marker == "group":
        objects = services.backends.objects
        objects.put_many([PendingMarkers(objects).marker("acme", [new_ticket_id(), orphan])])
    else:
        services.backends.objects.put(f"acme/pending/{orphan}.json", b"{}")
    services.backends.index.upsert(
        [
            VectorPoint(
                id=incident_point_id("acme", orphan, norm.fingerprint),
                vector=services.backends.embedder.embed([norm.embed_text])[0],
                payload={
                    "tenant": "acme",
                    "kind": "incident",
                    "service": "api",
                    "ticket_id": orphan,
                    "fingerprint": norm.fingerprint,
                    "template": norm.template,
                },
            )
        ]
    )
    services.close()

    restarted = make_services(settings)
    where = VectorFilter({"tenant": "acme", "ticket_id": orphan})
    assert restarted.backends.index.find(where, limit=10) == []
    assert restarted.metrics.reconciled._value.get() == (2 if marker == "group" else 1)
    assert restarted.backends.objects.list_keys("acme/pending/") == []
    result = await restarted.responder.handle("acme", IncidentReport(service="api", log=disk_log(2)))
    assert result.status == "new"


def _server(data_dir: Path) -> ServeProcess:
    return ServeProcess(data_dir, {"IR_API_KEYS": "acme:acme-key-123"})


@pytest.mark.slow
def test_kill_9_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    server = _server(tmp_path / "data").start()
    port = server.port
    acked: list[dict[str, str]] = []
    headers = {"X-API-Key": "acme-key-123"}
    import threading

    def load() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for i in range(10_000):
                log = (
                    db_log(i)
                    if i % 3
                    else disk_log(i)
                    if i % 2
                    else f"unique failure number {i} in module m{i}"
                )
                try:
                    r = http.post(
                        "/v1/incidents", json={"service": f"svc{i % 4}", "log": log}, headers=headers
                    )
                except httpx.HTTPError:
                    return
                if r.status_code in (200, 201):
                    acked.append(r.json())

    worker = threading.Thread(target=load)
    worker.start()
    while len(acked) < 40:
        time.sleep(0.05)
    server.kill()
    worker.join()

    server.start()  # the same data dir and port
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, headers=headers) as http:
            for result in acked:
                assert http.get(f"/v1/incidents/{result['incident_id']}").json() == result
                assert http.get(f"/v1/tickets/{result['ticket_id']}").status_code == 200
            print(f"\nkill -9 after {len(acked)} acknowledged reports: {len(acked)} found after restart")
            # The index still works and still deduplicates against pre-crash tickets.
            # (report 1 went to svc1 with a database log, and was acknowledged)
            again = http.post("/v1/incidents", json={"service": "svc1", "log": db_log(10_001)}).json()
            assert again["status"] == "existing"
            assert again["ticket_id"] == acked[1]["ticket_id"]
    finally:
        code = server.stop(timeout=30)
    assert code == 0


@pytest.mark.slow
def test_sigterm_finishes_in_flight_requests_and_exits_0(tmp_path: Path) -> None:
    import concurrent.futures

    server = _server(tmp_path / "data").start()
    port = server.port
    headers = {"X-API-Key": "acme-key-123"}

    # One client made up front: making one per request costs tens of ms of CPU each (its
    # TLS context), which on a busy machine delayed every request past a fixed sleep.
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30,
                          limits=httpx.Limits(max_connections=16))  # fmt: skip

    def post(i: int) -> dict[str, str] | None:
        try:
            body = {"service": f"s{i % 3}", "log": f"distinct failure {i} in component c{i}"}
            r = client.post("/v1/incidents", json=body)
        except httpx.HTTPError:
            return None  # not accepted: the server had stopped listening
        assert r.status_code in (200, 201), r.text  # never half-applied, never a 5xx
        return dict(r.json())

    with client, concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(post, i) for i in range(48)]
        # SIGTERM once the server is answering, with up to 15 more requests in flight.
        concurrent.futures.wait(futures, timeout=60, return_when=concurrent.futures.FIRST_COMPLETED)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        results = [f.result() for f in futures]
    assert server.stop(timeout=60) == 0
    acked = [r for r in results if r is not None]
    print(f"\nSIGTERM with requests in flight: {len(acked)} of {len(results)} answered")
    assert acked, "some requests were in flight when SIGTERM arrived"

    server.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10) as http:
            for result in acked:
                assert http.get(f"/v1/incidents/{result['incident_id']}").json() == result
    finally:
        server.stop(timeout=30)

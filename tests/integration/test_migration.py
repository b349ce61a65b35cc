"""Moving a deployment: documents to another store, vectors rebuilt from documents."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from incident_responder.backends.objects.local import LocalObjectStore
from incident_responder.container import Services
from incident_responder.migration import copy_objects, reindex
from incident_responder.models import IncidentReport, Runbook
from incident_responder.pipeline.normalize import NORMALIZER_VERSION
from incident_responder.pipeline.ticket_points import incident_point_id
from incident_responder.ports import VectorFilter, VectorPoint
from incident_responder.settings import Settings
from tests.helpers import DB_RUNBOOK, db_log, disk_log
from tests.s3_servers import S3Server


def test_copy_objects_copies_everything_once(tmp_path: Path) -> None:
    source, target = LocalObjectStore(tmp_path / "a"), LocalObjectStore(tmp_path / "b")
    keys = ["t1/tickets/x.json", "t1/incidents/i.json", "t2/runbooks/r.json", "t2/pending/p.json"]
    for k in keys:
        source.put(k, k.encode())
    first = copy_objects(source, target)
    assert (first.tenants, first.copied, first.unchanged) == (2, 4, 0)
    assert all((got := target.get(k)) is not None and got.data == k.encode() for k in keys)
    source.put("t1/tickets/x.json", b"changed")
    again = copy_objects(source, target)
    assert (again.copied, again.unchanged) == (1, 3)


async def test_reindex_rebuilds_a_lost_index(
    make_settings: Callable[..., Settings], make_services: Callable[..., Services]
) -> None:
    settings = make_settings()
    services = make_services(settings)
    services.catalog.put(
        "acme", Runbook(id="db-refused", title="Database connection refused", content=DB_RUNBOOK)
    )
    first = await services.responder.handle("acme", IncidentReport(service="api", log=db_log(1)))
    await services.responder.handle("acme", IncidentReport(service="api", log=disk_log(1)))
    services.close()

    shutil.rmtree(settings.data_dir / "index")  # e.g. moving to a new, empty index backend
    rebuilt = make_services(settings)
    report = reindex(rebuilt)
    assert (report.tenants, report.tickets, report.vectors_written, report.runbooks) == (1, 2, 2, 1)
    assert reindex(rebuilt).vectors_written == 0  # idempotent
    again = await rebuilt.responder.handle("acme", IncidentReport(service="api", log=db_log(2)))
    assert again.status == "existing" and again.ticket_id == first.ticket_id
    assert [h.id for h in rebuilt.catalog.search("acme", db_log(3))] == ["db-refused"]


def test_copy_local_to_s3_server(tmp_path: Path, moto_s3: S3Server) -> None:
    source = LocalObjectStore(tmp_path / "local")
    keys = [f"acme/tickets/tkt_{i:03d}.json" for i in range(25)] + ["globex/incidents/inc_1.json"]
    for k in keys:
        source.put(k, k.encode())
    with moto_s3.store() as target:
        report = copy_objects(source, target)
        assert (report.tenants, report.copied) == (2, 26)
        assert target.list_keys("acme/tickets/") == sorted(k for k in keys if k.startswith("acme"))
        assert copy_objects(source, target).unchanged == 26


async def test_tickets_of_older_normalizer_rules_are_brought_to_the_current_ones(
    make_settings: Callable[..., Settings], make_services: Callable[..., Services]
) -> None:
    """A changed rule table never compares old templates with new ones: a ticket made by other
    rules is renormalized from the reports it keeps (at start-up, once per rules version), and
    only then do new reports join it by their current fingerprint."""
    settings = make_settings()
    services = make_services(settings)
    first = await services.responder.handle("acme", IncidentReport(service="api", log=db_log(1)))
    assert first.ticket_id is not None
    # Make the ticket look as an older rule table would have left it: another template (the
    # address unmasked), another fingerprint, and its vector labelled with that version.
    ticket, version = services.tickets.get("acme", first.ticket_id)
    old_template = "could not connect to database at 10.0.1.7:5432: connection refused (attempt <num>)"
    (fingerprint, signature), *_ = ticket.signatures.items()
    old = signature.model_copy(update={"template": old_template, "normalizer_version": ""})
    ticket.signatures = {"f" * 32: old}
    ticket.normalizer_version = "2000-01-01.0"
    services.tickets.update(ticket, version)
    services.backends.index.delete(VectorFilter({"tenant": "acme", "ticket_id": first.ticket_id}))
    vector = services.backends.embedder.embed([signature.embed_text])
    payload = {"tenant": "acme", "kind": "incident", "service": "api", "ticket_id": first.ticket_id,
               "fingerprint": "f" * 32, "template": old_template, "status": "open",
               "normalizer_version": "2000-01-01.0"}  # fmt: skip
    point_id = incident_point_id("acme", first.ticket_id, "f" * 32)
    services.backends.index.upsert([VectorPoint(id=point_id, vector=vector[0], payload=payload)])
    services.tickets.set_normalizer_mark("acme", "2000-01-01.0")
    # Compared with the old template, the new report would be a "template" match; it is not
    # compared: the report is not merged by template or meaning into the old-rules ticket.
    before = await services.responder.handle("acme", IncidentReport(service="api", log=db_log(2)))
    assert before.ticket_id != first.ticket_id
    services.close()

    restarted = make_services(settings)  # renormalizes at start-up
    migrated, _ = restarted.tickets.get("acme", first.ticket_id)
    assert migrated.normalizer_version == NORMALIZER_VERSION
    assert fingerprint in migrated.signatures and "f" * 32 in migrated.signatures
    assert migrated.signatures["f" * 32].normalizer_version == "2000-01-01.0"
    assert restarted.tickets.normalizer_mark("acme") == NORMALIZER_VERSION
    after = await restarted.responder.handle("acme", IncidentReport(service="api", log=db_log(3)))
    assert after.status == "existing" and after.match is not None and after.match.method == "fingerprint"
    assert after.ticket_id in (first.ticket_id, before.ticket_id)  # both hold the current form now
    assert reindex(restarted).renormalized == 0  # idempotent

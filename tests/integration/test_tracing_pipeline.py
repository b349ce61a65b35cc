"""The real app and pipeline under an in-memory span exporter: one span tree per request."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from incident_responder.api.app import create_app
from incident_responder.container import Services
from incident_responder.observability.tracing import get_tracer
from incident_responder.settings import Settings
from tests.conftest import ACME
from tests.helpers import db_log


async def test_span_per_request_and_per_stage(
    make_settings: Callable[..., Settings], make_services: Callable[..., Services], embedder: object
) -> None:
    from incident_responder.container import build_services

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = make_settings()
    services = build_services(settings, embedder=embedder, tracer=get_tracer(provider))  # type: ignore[arg-type]
    try:
        app = create_app(settings, services=services, tracer_provider=provider)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            r = await http.post(
                "/v1/incidents",
                json={"service": "api", "log": db_log(1)},
                headers={**ACME, "X-Request-ID": "req-42"},
            )
            assert r.status_code == 201 and r.headers["X-Request-ID"] == "req-42"
    finally:
        services.close()
    spans = exporter.get_finished_spans()
    by_name = {s.name: s for s in spans}
    server = next(s for s in spans if s.parent is None)
    assert "POST" in server.name
    for stage in ("ir.fingerprint", "ir.embed", "ir.search", "ir.retrieve", "ir.recommend", "ir.store"):
        assert stage in by_name, f"missing {stage} in {sorted(by_name)}"
        assert by_name[stage].context.trace_id == server.context.trace_id
    attrs = {k: v for s in spans for k, v in (s.attributes or {}).items()}
    assert attrs.get("ir.status") == "new" and str(attrs.get("ir.ticket_id", "")).startswith("tkt_")
    assert attrs.get("ir.request_id") == "req-42"
    assert by_name["ir.store"].attributes["ir.backend"] == "tickets:local"
    assert by_name["ir.search"].attributes["ir.backend"] == "vector:qdrant-edge"

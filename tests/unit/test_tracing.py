"""OpenTelemetry spans per request and per pipeline stage."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from incident_responder.observability.request_ids import RequestIdMiddleware
from incident_responder.observability.tracing import (
    configure_tracing,
    get_tracer,
    instrument_app,
    set_attributes,
    stage_span,
)

# ---------------------------------------------------------------- tracing


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def by_name(finished: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in finished}


def test_stage_spans_nest_and_carry_attributes(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = spans
    tracer = get_tracer(provider)
    with stage_span(tracer, "incident", tenant="acme"):
        with stage_span(tracer, "embed", texts=2):
            pass
        with stage_span(tracer, "search") as search:
            set_attributes(ticket_id="T-1", similarity=0.93, backend="vector:qdrant-edge", method=None)
            assert search.is_recording()
        with stage_span(tracer, "store"):
            set_attributes(status="existing", **{"http.custom": "kept"})

    got = by_name(exporter.get_finished_spans())
    assert set(got) == {"ir.incident", "ir.embed", "ir.search", "ir.store"}
    root = got["ir.incident"]
    assert root.parent is None
    root_id = root.context.span_id
    for child in ("ir.embed", "ir.search", "ir.store"):
        parent = got[child].parent
        assert parent is not None and parent.span_id == root_id
        assert got[child].context.trace_id == root.context.trace_id
    assert dict(root.attributes or {}) == {"ir.stage": "incident", "ir.tenant": "acme"}
    assert dict(got["ir.embed"].attributes or {}) == {"ir.stage": "embed", "ir.texts": 2}
    assert dict(got["ir.search"].attributes or {}) == {
        "ir.stage": "search",
        "ir.ticket_id": "T-1",
        "ir.similarity": 0.93,
        "ir.backend": "vector:qdrant-edge",
    }
    assert dict(got["ir.store"].attributes or {}) == {
        "ir.stage": "store",
        "ir.status": "existing",
        "http.custom": "kept",
    }


def test_stage_span_records_errors(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = spans
    with pytest.raises(RuntimeError, match="boom"), stage_span(get_tracer(provider), "recommend"):
        raise RuntimeError("boom")
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]


def test_without_a_tracer_nothing_records() -> None:
    with stage_span(None, "embed") as span:
        assert not span.is_recording()
        set_attributes(ticket_id="T-1")  # no current span: a no-op, no error
    with stage_span(get_tracer(None), "embed") as span:
        assert not span.is_recording()


def test_configure_tracing_is_off_unless_enabled() -> None:
    assert configure_tracing(enabled=False, service_name="ir", exporter="otlp") is None


@pytest.mark.parametrize("exporter", ["none", "console"])
def test_configure_tracing_builds_a_provider(exporter: str) -> None:
    provider = configure_tracing(enabled=True, service_name="ir-test", exporter=exporter)  # type: ignore[arg-type]
    assert provider is not None
    try:
        assert provider.resource.attributes["service.name"] == "ir-test"
    finally:
        provider.shutdown()


class _Collector(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, str, int]] = []  # noqa: RUF012 - one test at a time

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.append((self.path, self.headers.get("Content-Type", ""), len(body)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_otlp_exporter_is_configured_by_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    _Collector.received = []
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2")
        provider = configure_tracing(enabled=True, service_name="ir-test", exporter="otlp")
        assert provider is not None
        with stage_span(get_tracer(provider), "store"):
            pass
        assert provider.force_flush(5_000)
        provider.shutdown()
    finally:
        server.shutdown()
        server.server_close()
    assert len(_Collector.received) == 1
    path, content_type, size = _Collector.received[0]
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    assert size > 0


def _tiny_app(provider: TracerProvider) -> FastAPI:
    app = FastAPI()
    tracer = get_tracer(provider)

    @app.get("/hello/{name}")
    async def hello(name: str) -> dict[str, str]:
        with stage_span(tracer, "embed"):
            pass
        return {"hello": name}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(RequestIdMiddleware)
    instrument_app(app, provider)
    return app


async def test_fastapi_instrumentation_makes_server_spans(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    app = _tiny_app(provider)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/hello/world", headers={"X-Request-ID": "req-1"})
        assert response.status_code == 200
        assert (await client.get("/healthz")).status_code == 200

    finished = exporter.get_finished_spans()
    servers = [s for s in finished if s.kind is SpanKind.SERVER]
    assert len(servers) == 1, "one server span, none for /healthz"
    server = servers[0]
    attributes = dict(server.attributes or {})
    assert attributes.get("http.route") == "/hello/{name}"
    assert attributes.get("ir.request_id") == "req-1"
    embed = by_name(finished)["ir.embed"]
    assert embed.parent is not None
    assert embed.parent.span_id == server.context.span_id


# ---------------------------------------------------------------- request ids


# ---------------------------------------------------------------- costs

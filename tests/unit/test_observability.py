"""Tracing spans, request ids and the cost estimate."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import Gauge
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

from incident_responder.errors import BackendUnavailable, InvalidInput
from incident_responder.observability.costs import (
    MONTH_SECONDS,
    PriceTable,
    costs_command,
    estimate_costs,
    format_costs,
)
from incident_responder.observability.metrics import Metrics
from incident_responder.observability.request_ids import RequestIdMiddleware, valid_request_id
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


def _request_id_app() -> FastAPI:
    app = FastAPI()

    @app.get("/who")
    async def who(request: Request) -> dict[str, object]:
        structlog.get_logger("test").info("inside")
        return {
            "bound": structlog.contextvars.get_contextvars().get("request_id"),
            "state": request.state.request_id,
        }

    @app.get("/own-header")
    async def own_header() -> JSONResponse:
        return JSONResponse({}, headers={"X-Request-ID": "from-the-app"})

    app.add_middleware(RequestIdMiddleware)
    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=_request_id_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_valid_request_id_is_echoed_and_bound(client: httpx.AsyncClient) -> None:
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        response = await client.get("/who", headers={"X-Request-ID": "abc-123_X.y"})
    assert response.headers["X-Request-ID"] == "abc-123_X.y"
    assert response.json() == {"bound": "abc-123_X.y", "state": "abc-123_X.y"}
    assert [entry.get("request_id") for entry in logs] == ["abc-123_X.y"]
    assert "request_id" not in structlog.contextvars.get_contextvars(), "unbound after the request"


@pytest.mark.parametrize("given", [None, "", "has space", "x" * 129, "semi;colon", "ünïcode", "a/b"])
async def test_invalid_or_missing_request_id_is_replaced(
    client: httpx.AsyncClient, given: str | None
) -> None:
    headers = [] if given is None else [(b"X-Request-ID", given.encode("utf-8"))]
    response = await client.get("/who", headers=headers)
    rid = response.headers["X-Request-ID"]
    assert rid != given
    assert len(rid) == 32 and int(rid, 16) >= 0
    assert response.json() == {"bound": rid, "state": rid}


async def test_each_request_gets_its_own_id(client: httpx.AsyncClient) -> None:
    first = (await client.get("/who")).headers["X-Request-ID"]
    second = (await client.get("/who")).headers["X-Request-ID"]
    assert first != second


async def test_the_response_has_exactly_one_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/own-header", headers={"X-Request-ID": "mine"})
    assert response.headers.get_list("X-Request-ID") == ["mine"]


async def test_non_http_scopes_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        pass

    await RequestIdMiddleware(app)({"type": "lifespan"}, receive, send)
    assert seen == ["lifespan"]


def test_valid_request_id_bounds() -> None:
    assert valid_request_id("a" * 128) == "a" * 128
    assert valid_request_id("a" * 129) is None
    assert valid_request_id("ok\n") is None
    assert valid_request_id(None) is None


# ---------------------------------------------------------------- costs


def _metrics_text(*, vector: str = "pinecone", tickets: str = "s3", start: float | None = None) -> str:
    m = Metrics()
    m.incidents.labels("new", "api").inc(60)
    m.incidents.labels("existing", "api").inc(35)
    m.incidents.labels("regression", "api").inc(5)
    m.incidents.labels("queued", "api").inc(7)  # counted again as new/existing once replayed
    m.count_llm_tokens(600_000, 400_000)
    m.count_llm_tokens(400_000, 600_000)
    m.backend_calls.labels(f"vector:{vector}", "search", "ok").inc(900)
    m.backend_calls.labels(f"vector:{vector}", "search", "backend_unavailable").inc(100)
    m.backend_calls.labels(f"vector:{vector}", "upsert", "ok").inc(2_000)
    m.backend_calls.labels(f"tickets:{tickets}", "put", "ok").inc(1_500)
    m.backend_calls.labels(f"tickets:{tickets}", "list", "ok").inc(500)
    m.backend_calls.labels(f"tickets:{tickets}", "get", "ok").inc(10_000)
    m.backend_calls.labels(f"tickets:{tickets}", "delete", "ok").inc(50)  # free on S3
    m.backend_calls.labels("llm:openai", "recommend", "ok").inc(2)
    if start is not None:
        Gauge("process_start_time_seconds", "start", registry=m.registry).set(start)
    return m.render().decode()


def test_costs_arithmetic() -> None:
    report = estimate_costs(
        _metrics_text(), PriceTable(), window_seconds=3600.0, vector_kind="pinecone", tickets_kind="s3"
    )
    assert report.incidents == 100
    assert (report.llm_input_tokens, report.llm_output_tokens) == (1_000_000, 1_000_000)
    assert report.llm_cost == pytest.approx(0.15 + 0.60)
    assert (report.vector_reads, report.vector_writes) == (1_000, 2_000)
    assert report.vector_cost == pytest.approx(1.0 + 2 * 0.004)
    assert (report.object_puts, report.object_gets) == (2_000, 10_000)
    assert report.object_cost == pytest.approx(2 * 0.005 + 10 * 0.0004)
    total = 0.75 + 1.008 + 0.014
    assert report.total_cost == pytest.approx(total)
    assert report.cost_per_incident == pytest.approx(total / 100)
    assert (report.window_seconds, report.window_source) == (3600.0, "window_seconds")
    assert report.monthly_cost == pytest.approx(total * 24 * 30)
    assert report.incidents_per_month == pytest.approx(100 * 24 * 30)

    text = format_costs(report)
    assert "llm input tokens" in text and "$0.15" in text and "$0.60" in text
    assert f"${total:.2f}" in text
    assert "cost per incident:   $0.01772" in text


def test_llm_only_over_100_incidents() -> None:
    report = estimate_costs(
        _metrics_text(vector="qdrant-edge", tickets="local"), PriceTable(), window_seconds=None, now=0.0
    )
    assert (report.vector_kind, report.tickets_kind) == ("qdrant-edge", "local")  # read from the labels
    assert not report.vector_metered and not report.objects_metered
    assert [line.item for line in report.lines] == ["llm input tokens", "llm output tokens"]
    assert report.total_cost == pytest.approx(0.75)
    assert report.cost_per_incident == pytest.approx(0.0075)
    assert report.monthly_cost is None and report.window_seconds is None
    text = format_costs(report)
    assert "n/a" in text and "not priced per request" in text


def test_uptime_comes_from_process_start_time() -> None:
    now = time.time()
    text = _metrics_text(start=now - 7200)
    prices = PriceTable(llm_input_per_million=1.0, llm_output_per_million=1.0)
    report = estimate_costs(
        text, prices, window_seconds=60.0, vector_kind="qdrant-edge", tickets_kind="local", now=now
    )
    assert report.window_source == "process_start_time_seconds"
    assert report.window_seconds == pytest.approx(7200)
    assert report.monthly_cost == pytest.approx(2.0 / 7200 * MONTH_SECONDS)


def test_window_falls_back_to_counter_creation_time() -> None:
    report = estimate_costs(_metrics_text(), PriceTable(), window_seconds=None, now=time.time() + 600)
    assert report.window_source == "counters_created"
    assert report.window_seconds == pytest.approx(600, abs=5)


def test_price_table_validates() -> None:
    with pytest.raises(ValidationError):
        PriceTable(llm_input_per_million=-1)
    with pytest.raises(ValidationError):
        PriceTable.model_validate({"llm_input_per_milion": 1})


def test_costs_command_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.txt"
    path.write_text(_metrics_text(), encoding="utf-8")
    text = costs_command(None, path, PriceTable(), window_seconds=3600)
    assert "vector reads" in text and "s3 put/list" in text
    with pytest.raises(InvalidInput):
        costs_command(None, tmp_path / "missing.txt", PriceTable())
    path.write_text("this is { not metrics\n", encoding="utf-8")
    with pytest.raises(InvalidInput):
        costs_command(None, path, PriceTable())


def test_costs_command_needs_exactly_one_source(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        costs_command(None, None, PriceTable())
    with pytest.raises(InvalidInput):
        costs_command("http://127.0.0.1:1/metrics", tmp_path / "m.txt", PriceTable())
    with pytest.raises(InvalidInput):
        costs_command("file:///etc/passwd", None, PriceTable())


def test_costs_command_from_a_url() -> None:
    body = _metrics_text().encode()

    class Metricsz(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metricsz)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        text = costs_command(f"http://127.0.0.1:{server.server_port}/metrics", None, PriceTable())
    finally:
        server.shutdown()
        server.server_close()
    assert "cost per incident:   $0.01772" in text


def test_costs_command_unreachable_url() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(BackendUnavailable):
        costs_command(f"http://127.0.0.1:{port}/metrics", None, PriceTable())

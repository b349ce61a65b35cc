"""The cost estimate from the service's own metrics, and the ``costs`` command."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import Gauge
from pydantic import ValidationError

from incident_responder.errors import BackendUnavailable, InvalidInput
from incident_responder.observability.costs import (
    MONTH_SECONDS,
    PriceTable,
    costs_command,
    estimate_costs,
    format_costs,
)
from incident_responder.observability.metrics import Metrics

# ---------------------------------------------------------------- tracing


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

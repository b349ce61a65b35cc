"""What the service costs to run, estimated from its own Prometheus metrics.

Counted: LLM tokens (``ir_llm_tokens_total``), vector-index calls of metered (remote,
per-request priced) vector kinds, and object-store requests of metered ticket kinds
(S3), all from ``ir_backend_calls_total``. Not counted: compute, storage at rest,
network egress, retries inside one call (``ir_backend_calls_total`` counts calls, not
attempts). Prices are configurable; the defaults are list prices at the time of
writing (gpt-4o-mini, Pinecone-like serverless, S3 standard).
"""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from incident_responder.errors import BackendUnavailable, InvalidInput
from incident_responder.settings import PriceTable

MONTH_SECONDS = 30 * 24 * 3600.0
FETCH_TIMEOUT = 5.0
MIN_WINDOW_SECONDS = 1.0  # shorter windows give no monthly extrapolation
# Vector kinds billed per request; self-hosted ones (qdrant-edge, qdrant, pgvector) are not.
METERED_VECTOR_KINDS = frozenset({"pinecone"})
METERED_TICKET_KINDS = frozenset({"s3"})
VECTOR_READS = frozenset({"search", "find", "scroll", "exists"})
VECTOR_WRITES = frozenset({"upsert", "set_payload", "delete"})
# S3 bills LIST in the PUT/COPY/POST tier, HEAD with GET; DELETE is free.
OBJECT_PUTS = frozenset({"put", "list"})
OBJECT_GETS = frozenset({"get", "ping"})


@dataclass(frozen=True)
class CostLine:
    """One priced item of a :class:`CostReport`: a quantity of ``unit`` at ``unit_price``, and its
    cost in US dollars."""

    item: str
    quantity: float
    unit: str
    unit_price: float  # $ per ``unit``
    cost: float


@dataclass(frozen=True)
class CostReport:
    """What the service cost over the metrics' window: the usage counted, its priced lines and
    totals, and the rates extrapolated to a month."""

    incidents: float  # processed (new, existing, regression); queued reports count once applied
    llm_input_tokens: float
    llm_output_tokens: float
    vector_reads: float
    vector_writes: float
    object_puts: float
    object_gets: float
    vector_kind: str | None
    tickets_kind: str | None
    vector_metered: bool
    objects_metered: bool
    lines: tuple[CostLine, ...]
    total_cost: float
    cost_per_incident: float | None
    window_seconds: float | None
    window_source: str | None  # process_start_time_seconds | window_seconds | counters_created
    monthly_cost: float | None  # at the observed rate, 30 days
    incidents_per_month: float | None
    by_status: dict[str, float] = field(default_factory=dict)

    @property
    def llm_cost(self) -> float:
        return sum(line.cost for line in self.lines if line.item.startswith("llm"))

    @property
    def vector_cost(self) -> float:
        return sum(line.cost for line in self.lines if line.item.startswith("vector"))

    @property
    def object_cost(self) -> float:
        return sum(line.cost for line in self.lines if line.item.startswith("s3"))


@dataclass
class _Parsed:
    incidents: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)
    calls: dict[tuple[str, str], float] = field(default_factory=dict)  # (backend, operation)
    backends: set[str] = field(default_factory=set)
    process_start: float | None = None
    created: float | None = None


def estimate_costs(
    metrics_text: str,
    prices: PriceTable,
    *,
    window_seconds: float | None,
    vector_kind: str | None = None,
    tickets_kind: str | None = None,
    now: float | None = None,
) -> CostReport:
    """Costs so far and per incident, and per month at the rate observed.

    The window is the process uptime (``process_start_time_seconds``) when exported,
    else ``window_seconds``, else the age of our oldest counter (``ir_*_created``).
    A kind left ``None`` is read from the ``backend`` labels (``vector:<kind>``,
    ``tickets:<kind>``).
    """
    parsed = _parse(metrics_text)
    now = time.time() if now is None else now
    vector_kind = vector_kind or _kind(parsed.backends, "vector:")
    tickets_kind = tickets_kind or _kind(parsed.backends, "tickets:")
    vector_metered = vector_kind in METERED_VECTOR_KINDS
    objects_metered = tickets_kind in METERED_TICKET_KINDS

    def calls(prefix: str, operations: frozenset[str]) -> float:
        return sum(n for (b, op), n in parsed.calls.items() if b.startswith(prefix) and op in operations)

    tokens_in = parsed.tokens.get("in", 0.0)
    tokens_out = parsed.tokens.get("out", 0.0)
    reads, writes = calls("vector:", VECTOR_READS), calls("vector:", VECTOR_WRITES)
    puts, gets = calls("tickets:", OBJECT_PUTS), calls("tickets:", OBJECT_GETS)

    lines = [
        _line("llm input tokens", tokens_in, "1M tokens", 1e6, prices.llm_input_per_million),
        _line("llm output tokens", tokens_out, "1M tokens", 1e6, prices.llm_output_per_million),
    ]
    if vector_metered:
        lines.append(_line("vector reads", reads, "1k requests", 1e3, prices.vector_query_per_thousand))
        lines.append(_line("vector writes", writes, "1k requests", 1e3, prices.vector_write_per_thousand))
    if objects_metered:
        lines.append(_line("s3 put/list", puts, "1k requests", 1e3, prices.s3_put_per_thousand))
        lines.append(_line("s3 get/head", gets, "1k requests", 1e3, prices.s3_get_per_thousand))
    total = sum(line.cost for line in lines)

    incidents = sum(n for status, n in parsed.incidents.items() if status != "queued")
    window, source = _window(parsed, window_seconds, now)
    per_second = None if window is None else 1.0 / window
    return CostReport(
        incidents=incidents,
        llm_input_tokens=tokens_in,
        llm_output_tokens=tokens_out,
        vector_reads=reads,
        vector_writes=writes,
        object_puts=puts,
        object_gets=gets,
        vector_kind=vector_kind,
        tickets_kind=tickets_kind,
        vector_metered=vector_metered,
        objects_metered=objects_metered,
        lines=tuple(lines),
        total_cost=total,
        cost_per_incident=total / incidents if incidents > 0 else None,
        window_seconds=window,
        window_source=source,
        monthly_cost=None if per_second is None else total * per_second * MONTH_SECONDS,
        incidents_per_month=None if per_second is None else incidents * per_second * MONTH_SECONDS,
        by_status=dict(sorted(parsed.incidents.items())),
    )


def format_costs(report: CostReport) -> str:
    """A small plain-text table of ``report``."""
    rows = [
        (line.item, f"{line.quantity:,.0f}", f"{_usd(line.unit_price)} / {line.unit}", _usd(line.cost))
        for line in report.lines
    ]
    header = ("item", "quantity", "unit price", "cost")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]

    def fmt(row: tuple[str, str, str, str]) -> str:
        return f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]:>{widths[3]}}"

    out = [fmt(header), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)]
    out.append(fmt(("total", "", "", _usd(report.total_cost))))
    out.append("")
    statuses = ", ".join(f"{s} {n:,.0f}" for s, n in report.by_status.items())
    out.append(f"incidents processed: {report.incidents:,.0f}" + (f" ({statuses})" if statuses else ""))
    out.append(
        "cost per incident:   "
        + ("n/a" if report.cost_per_incident is None else _usd(report.cost_per_incident))
    )
    if report.window_seconds is None:
        out.append("per month:           n/a (no uptime in the metrics; give a window)")
    else:
        out.append(
            f"per month (30 d):    {_usd(report.monthly_cost or 0.0)} for "
            f"{report.incidents_per_month or 0.0:,.0f} incidents at the rate of the last "
            f"{_duration(report.window_seconds)} ({report.window_source})"
        )
    if not report.vector_metered:
        out.append(f"vector index {report.vector_kind or '(unknown kind)'}: not priced per request")
    if not report.objects_metered:
        out.append(f"ticket store {report.tickets_kind or '(unknown kind)'}: not priced per request")
    return "\n".join(out)


def costs_command(
    url: str | None,
    file: Path | None,
    prices: PriceTable,
    *,
    window_seconds: float | None = None,
    vector_kind: str | None = None,
    tickets_kind: str | None = None,
) -> str:
    """``incident-responder costs``: read the metrics from ``url`` or ``file`` and format the estimate."""
    if (url is None) == (file is None):
        raise InvalidInput("give exactly one of --url or --file")
    if url is not None:
        text = fetch_metrics(url)
    else:
        assert file is not None
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"cannot read {file}: {exc.strerror or exc}") from exc
    report = estimate_costs(
        text, prices, window_seconds=window_seconds, vector_kind=vector_kind, tickets_kind=tickets_kind
    )
    return format_costs(report)


def fetch_metrics(url: str, *, timeout: float = FETCH_TIMEOUT) -> str:
    if not url.startswith(("http://", "https://")):
        raise InvalidInput(f"--url must be an http(s) URL, not {url!r}")
    request = urllib.request.Request(url, headers={"Accept": "text/plain"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body: bytes = response.read()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise BackendUnavailable(f"cannot fetch {url}: {getattr(exc, 'reason', exc)}") from exc
    return body.decode("utf-8", errors="replace")


def _parse(text: str) -> _Parsed:
    parsed = _Parsed()
    try:
        samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    except (ValueError, IndexError) as exc:
        raise InvalidInput(f"not Prometheus exposition text: {exc}") from exc
    for sample in samples:
        name, labels, value = sample.name, sample.labels, float(sample.value)
        if math.isnan(value):
            continue
        if name == "ir_incidents_total":
            status = labels.get("status", "")
            parsed.incidents[status] = parsed.incidents.get(status, 0.0) + value
        elif name == "ir_llm_tokens_total":
            direction = labels.get("direction", "")
            parsed.tokens[direction] = parsed.tokens.get(direction, 0.0) + value
        elif name == "ir_backend_calls_total":
            key = (labels.get("backend", ""), labels.get("operation", ""))
            parsed.calls[key] = parsed.calls.get(key, 0.0) + value
            parsed.backends.add(key[0])
        elif name == "ir_circuit_breaker_state":
            parsed.backends.add(labels.get("backend", ""))
        elif name == "process_start_time_seconds":
            parsed.process_start = value
        elif name.startswith("ir_") and name.endswith("_created") and value > 0:
            parsed.created = value if parsed.created is None else min(parsed.created, value)
    return parsed


def _kind(backends: Iterable[str], prefix: str) -> str | None:
    kinds = sorted(b.removeprefix(prefix) for b in backends if b.startswith(prefix))
    return kinds[0] if kinds else None


def _window(parsed: _Parsed, window_seconds: float | None, now: float) -> tuple[float | None, str | None]:
    if parsed.process_start is not None and now - parsed.process_start >= MIN_WINDOW_SECONDS:
        return now - parsed.process_start, "process_start_time_seconds"
    if window_seconds is not None and window_seconds >= MIN_WINDOW_SECONDS:
        return window_seconds, "window_seconds"
    if parsed.created is not None and now - parsed.created >= MIN_WINDOW_SECONDS:
        return now - parsed.created, "counters_created"
    return None, None


def _line(item: str, quantity: float, unit: str, per: float, unit_price: float) -> CostLine:
    return CostLine(item, quantity, unit, unit_price, quantity / per * unit_price)


def _usd(value: float) -> str:
    """Cents for a dollar or more, else up to six decimals (at least two)."""
    if value >= 1 or value == 0:
        return f"${value:,.2f}"
    digits = f"{value:.6f}".rstrip("0")
    return "$" + digits.ljust(digits.index(".") + 3, "0")


def _duration(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"

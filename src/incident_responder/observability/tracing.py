"""OpenTelemetry tracing: off by default, one span per pipeline stage when on.

Nothing here reads the environment: the SDK itself reads the standard ``OTEL_*``
variables (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``, ``OTEL_RESOURCE_ATTRIBUTES`` ...). No global
tracer provider is installed either: callers pass the provider or tracer around.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from incident_responder import __version__

if TYPE_CHECKING:
    from fastapi import FastAPI

Exporter = Literal["otlp", "console", "none"]
AttributeValue = str | bool | int | float | Sequence[str] | Sequence[bool] | Sequence[int] | Sequence[float]

TRACER_NAME = "incident_responder"
ATTRIBUTE_PREFIX = "ir."
# Regexes searched in the request path (never traced: probes and scrapes).
EXCLUDED_URLS = "/healthz$,/readyz$,/metrics$"


def configure_tracing(*, enabled: bool, service_name: str, exporter: Exporter) -> TracerProvider | None:
    """A tracer provider exporting to ``exporter``, or ``None`` when tracing is off.

    ``exporter="none"`` still creates spans (trace ids propagate, hooks see them) but
    sends them nowhere. Call ``provider.shutdown()`` at exit to flush pending spans.
    """
    if not enabled:
        return None
    resource = Resource.create({SERVICE_NAME: service_name, SERVICE_VERSION: __version__})
    provider = TracerProvider(resource=resource)
    span_exporter: SpanExporter | None = None
    if exporter == "otlp":
        # Imported here: protobuf + requests only load when OTLP export is wanted.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exporter = OTLPSpanExporter()  # endpoint, headers, timeout: OTEL_EXPORTER_OTLP_*
    elif exporter == "console":
        span_exporter = ConsoleSpanExporter(service_name=service_name)
    if span_exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
    return provider


def get_tracer(provider: trace.TracerProvider | None) -> trace.Tracer:
    """The app's tracer from ``provider``; a no-op tracer when tracing is off."""
    if provider is None:
        return trace.NoOpTracer()
    return provider.get_tracer(TRACER_NAME, __version__)


def instrument_app(app: FastAPI, provider: TracerProvider) -> None:
    """One server span per HTTP request (not for /healthz, /readyz, /metrics).

    Must be called before the app serves its first request.
    """
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.metrics import NoOpMeterProvider

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        meter_provider=NoOpMeterProvider(),  # Prometheus has the metrics; no global meter provider
        excluded_urls=EXCLUDED_URLS,
    )


@contextmanager
def stage_span(
    tracer: trace.Tracer | None, stage: str, **attributes: AttributeValue | None
) -> Iterator[trace.Span]:
    """A span named ``ir.<stage>`` around one pipeline stage, child of the current span.

    Exceptions raised inside are recorded on the span and mark it as an error
    (then re-raised). ``None`` attribute values are skipped. With ``tracer=None``
    this does nothing but yield a non-recording span.
    """
    if tracer is None:
        yield trace.INVALID_SPAN
        return
    with tracer.start_as_current_span(
        f"{ATTRIBUTE_PREFIX}{stage}", attributes=_attributes({"stage": stage, **attributes})
    ) as span:
        yield span


def set_attributes(**attrs: AttributeValue | None) -> None:
    """Put attributes (``ticket_id=..., status=...``) on the current span as ``ir.<name>``.

    Names that already contain a dot are used as given; ``None`` values are skipped;
    without a recording span this does nothing.
    """
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(_attributes(attrs))


def _attributes(attrs: dict[str, AttributeValue | None]) -> dict[str, AttributeValue]:
    return {
        (name if "." in name else ATTRIBUTE_PREFIX + name): value
        for name, value in attrs.items()
        if value is not None
    }

"""AWS Lambda entry points (``deploy/aws/template.yaml``): the HTTP API, and the replay of
the dead-letter queue.

- :func:`http_handler`: API Gateway HTTP API events (payload format 2.0) run through Mangum
  into the same ASGI app that ``incident-responder serve`` runs
  (:func:`~incident_responder.api.app.create_app`).
- :func:`notify_handler`: a schedule (EventBridge, every minute) turns every tenant's due
  ticket events into outbox messages and delivers what is due, as the server's background
  loops do (:mod:`~incident_responder.notifications.running`), within the invocation's time.
- :func:`dlq_handler`: SQS events from the dead-letter queue (``IR_DEAD_LETTERS__KIND=sqs``).
  Each record is a letter that :class:`~incident_responder.backends.dead_letters.sqs.SqsDeadLetters`
  sent; it is applied by :meth:`~incident_responder.pipeline.responder.Responder.replay`, the
  replay the servers use. The records that failed are answered in ``batchItemFailures``
  (the event source mapping has ``ReportBatchItemFailures``): SQS deletes the others and
  shows these again after the visibility timeout, and moves a letter that keeps failing
  to the redrive queue.

Settings come from the environment (``IR_*``), as for ``serve``. One container (the
settings, the model, the services and the app) is built once per Lambda execution
environment and serves every invocation in it; the app runs with ``lifespan="off"``, so none
of the server's background loops (dead-letter replay, idempotency sweep, notification
delivery) run here: the replay is :func:`dlq_handler`'s job.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from collections.abc import Coroutine
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from incident_responder.errors import BackendUnavailable, ConfigError
from incident_responder.models import DeadLetter

if TYPE_CHECKING:
    from mangum import Mangum

    from incident_responder.container import Services
    from incident_responder.settings import Settings

log = structlog.get_logger(__name__)

T = TypeVar("T")

__all__ = [
    "ColdStart",
    "LambdaContainer",
    "container",
    "deliver_notifications",
    "dlq_handler",
    "http_handler",
    "notify_handler",
    "replay_records",
]

# Seconds of an invocation left unused by the delivery loop (a message's attempt may take the
# channel timeout, 10 s by default, once started).
_NOTIFY_MARGIN = 12.0
_NOTIFY_DEFAULT = 50.0  # without a Lambda context (tests): this long at most


@dataclass(frozen=True)
class ColdStart:
    """Seconds each step of building the container took, in order."""

    imports_s: float  # the app's modules (FastAPI, the pipeline, the backends' clients)
    model_s: float  # the embedding model: tokenizer + ONNX Runtime session of the export
    services_s: float  # backends opened (S3, SQS, Redis, the vector index), runbooks preloaded
    app_s: float  # the FastAPI app and Mangum around it

    @property
    def total_s(self) -> float:
        return self.imports_s + self.model_s + self.services_s + self.app_s

    def as_dict(self) -> dict[str, float]:
        return {**{k: round(v, 3) for k, v in asdict(self).items()}, "total_s": round(self.total_s, 3)}


@dataclass
class LambdaContainer:
    """What one execution environment keeps between invocations."""

    settings: Settings
    services: Services
    api: Mangum
    loop: asyncio.AbstractEventLoop
    cold_start: ColdStart

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` on the container's event loop (the one Mangum uses too)."""
        asyncio.set_event_loop(self.loop)
        return self.loop.run_until_complete(work)

    def close(self) -> None:
        self.run(self.services.aclose())
        self.services.close()
        self.loop.close()
        asyncio.set_event_loop(None)


def build_container() -> LambdaContainer:
    """Settings from the environment, the model, the services and the app (blocking), timed."""
    started = time.perf_counter()
    from mangum import Mangum

    from incident_responder.api.app import create_app
    from incident_responder.backends import build_embedder
    from incident_responder.container import build_services
    from incident_responder.gc_tuning import tune_gc
    from incident_responder.logs import configure_logging
    from incident_responder.settings import load_settings

    imported = time.perf_counter()
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        embedder = build_embedder(settings)
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        raise ConfigError(
            f"no ONNX export of the model in {settings.onnx_cache_dir} (IR_EMBEDDING__ONNX_CACHE_DIR), "
            "and making one needs torch: run `incident-responder prepare-model` with it set to that "
            "folder in an install that has torch (a plain `pip install incident-responder`; the image's "
            "build stage does this)"
        ) from exc
    loaded = time.perf_counter()
    services = build_services(settings, embedder=embedder)
    perf = settings.performance
    if not perf.naive:  # as the server's start-up does
        tune_gc(freeze=perf.gc_freeze, young_threshold=perf.gc_young_threshold)
    built = time.perf_counter()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # Mangum runs every request on the current event loop
    api = Mangum(create_app(settings, services=services), lifespan="off")
    cold = ColdStart(
        imports_s=imported - started,
        model_s=loaded - imported,
        services_s=built - loaded,
        app_s=time.perf_counter() - built,
    )
    log.info("lambda.cold_start", **cold.as_dict())
    return LambdaContainer(settings=settings, services=services, api=api, loop=loop, cold_start=cold)


# The one module-level singleton of the project, and on purpose: Lambda calls a function per
# event and keeps the process between events, so a module global is the only thing that
# lives as long as the execution environment. Everything else is composed by build_services
# and passed along (container.py); this module is an entry point like `serve`'s main.
_container: LambdaContainer | None = None


def container() -> LambdaContainer:
    """The execution environment's container, built on first use."""
    global _container
    if _container is None:
        _container = build_container()
    return _container


def reset() -> None:
    """Close and forget the container (tests; a new one is built on the next event)."""
    global _container
    if _container is not None:
        current, _container = _container, None
        current.close()


def http_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """An API Gateway HTTP API event -> the app's response."""
    box = container()
    asyncio.set_event_loop(box.loop)
    return box.api(event, context)


def dlq_handler(event: dict[str, Any], context: Any) -> dict[str, list[dict[str, str]]]:
    """An SQS event of dead letters -> ``{"batchItemFailures": [...]}`` for those not applied."""
    box = container()
    return box.run(replay_records(box.services, event.get("Records") or []))


def notify_handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    """A scheduled event -> ``{"pumped": messages put, "attempted": deliveries tried}``."""
    box = container()
    remaining = _NOTIFY_DEFAULT
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        remaining = context.get_remaining_time_in_millis() / 1000.0
    deadline = time.monotonic() + max(0.0, remaining - _NOTIFY_MARGIN)
    return box.run(deliver_notifications(box.services, deadline=deadline))


async def deliver_notifications(services: Services, *, deadline: float) -> dict[str, int]:
    """Pump every tenant's due events into the outbox, then deliver due messages until none is
    left or ``deadline`` (monotonic) has passed; what is left waits for the next invocation. A
    tenant whose events cannot be read is skipped (logged), as the server's loop does."""
    pumped = 0
    for tenant in await services.stages.run("pump", services.tenants):
        try:
            put, _ = await services.stages.run("pump", functools.partial(services.pump.pump, tenant))
        except Exception:
            log.exception("notify.pump_failed", tenant=tenant)
            continue
        pumped += put
    attempted = 0
    while time.monotonic() < deadline:
        tried = await services.dispatcher.run_once()
        if not tried:
            break
        attempted += tried
    return {"pumped": pumped, "attempted": attempted}


def letter_of(record: dict[str, Any]) -> DeadLetter:
    """The letter in an SQS record, as SqsDeadLetters.pending reads a received message."""
    data = json.loads(record["body"])
    data["attempts"] = int(record.get("attributes", {}).get("ApproximateReceiveCount", "1")) - 1
    return DeadLetter.model_validate(data)


async def replay_records(
    services: Services, records: list[dict[str, Any]]
) -> dict[str, list[dict[str, str]]]:
    """Apply each record's letter in order; the ids of those not applied, for SQS.

    Not ``Services.replay_dead_letters``: that one receives the letters from the queue itself,
    and here the event source mapping has received them already (and deletes them once this
    returns). A letter that cannot be read fails alone (SQS moves it to the redrive queue after
    its last receive); once a backend is down, this record and every later one fail without
    being tried, so that they are replayed in their order when it is back."""
    failures: list[dict[str, str]] = []
    down: str | None = None
    applied = 0
    for record in records:
        message_id = str(record.get("messageId", ""))
        if down is not None:
            failures.append({"itemIdentifier": message_id})
            continue
        try:
            letter = letter_of(record)
        except (ValueError, KeyError, TypeError) as exc:  # a pydantic ValidationError is a ValueError
            log.error(
                "dlq.unreadable_letter", message_id=message_id, error=f"{type(exc).__name__}: {exc}"[:300]
            )
            failures.append({"itemIdentifier": message_id})
            continue
        try:
            await services.responder.replay(letter)
        except BackendUnavailable as exc:
            down = exc.message
            log.warning(
                "dlq.replay_postponed", message_id=message_id, incident_id=letter.incident_id, error=down
            )
            failures.append({"itemIdentifier": message_id})
            continue
        except Exception:
            log.exception("dlq.replay_failed", message_id=message_id, incident_id=letter.incident_id)
            failures.append({"itemIdentifier": message_id})
            continue
        services.metrics.dlq_events.labels("replayed").inc()
        applied += 1
    log.info("dlq.batch", records=len(records), applied=applied, failed=len(failures))
    return {"batchItemFailures": failures}


# In Lambda (its runtime sets this variable), build while the execution environment
# initializes, before the first event: provisioned concurrency then starts warm. Elsewhere
# (tests, tools) importing this module builds nothing.
if os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"):
    container()

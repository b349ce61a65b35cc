"""``create_app``: the FastAPI application around a ``Services`` container."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio.to_thread
import structlog
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from incident_responder import __version__
from incident_responder.api.auth import KeyRing
from incident_responder.api.errors import install_error_handlers
from incident_responder.api.gate import Gate, RoutePolicies
from incident_responder.api.idempotency import IdempotencyGuard
from incident_responder.api.ratelimit import RequestLimiter
from incident_responder.api.routes import (
    alerts,
    channels,
    feedback,
    incidents,
    ops,
    policy,
    runbooks,
    shadow,
    silences,
    tickets,
    ui,
)
from incident_responder.container import Services, build_services
from incident_responder.gc_tuning import tune_gc
from incident_responder.notifications.running import dispatch_forever, pump_forever, tend_outbox_forever
from incident_responder.observability.metrics import Metrics, metrics_for
from incident_responder.observability.request_ids import RequestIdMiddleware
from incident_responder.observability.tracing import configure_tracing, get_tracer, instrument_app
from incident_responder.pipeline.late_recommendations import Ask
from incident_responder.settings import Settings

log = structlog.get_logger(__name__)


async def _replay_forever(app: FastAPI, interval: float) -> None:
    """Replay dead letters whenever there are some and no backend circuit is open."""
    while True:
        await asyncio.sleep(interval)
        services: Services | None = app.state.services
        if services is None or any(g.breaker.state == "open" for g in services.backends.guards):
            continue
        try:
            if await anyio.to_thread.run_sync(services.backends.dead_letters.depth) > 0:
                applied, waiting = await services.replay_dead_letters()
                if applied:
                    log.info("dlq.replayed", applied=applied, waiting=waiting)
        except Exception:
            log.exception("dlq.replay_failed")


async def _sweep_forever(app: FastAPI, interval: float) -> None:
    """Forget expired and excess Idempotency-Key records of every tenant, every ``interval`` s."""
    while True:
        await asyncio.sleep(interval)
        services: Services | None = app.state.services
        if services is None:
            continue
        try:
            removed = await anyio.to_thread.run_sync(services.sweep_idempotency)
            if removed:
                log.info("idempotency.swept", removed=removed)
        except Exception:
            log.exception("idempotency.sweep_failed")


async def _notify_forever(app: FastAPI, started: asyncio.Event) -> None:
    """Once the services are up: pump ticket events into the outbox and deliver it."""
    await started.wait()
    services: Services | None = app.state.services
    if services is None:  # they failed to start: /readyz says why
        return
    services.events_written.bind()
    services.messages_put.bind()
    services.events_written()  # events written while starting up
    if services.later is not None:  # LLM recommendations asked for before a stop
        services.later.submit(await services.stages.run("store", lambda: later_asks(services)))
    notes = services.settings.notifications
    loops = [
        pump_forever(
            services.pump,
            tenants=services.tenants,
            stages=services.stages,
            events_written=services.events_written,
            messages_put=services.messages_put,
        ),
        dispatch_forever(services.dispatcher, messages_put=services.messages_put),
        tend_outbox_forever(
            services.backends.outbox,
            stages=services.stages,
            metrics=services.metrics,
            keep_sent=notes.keep_sent,
        ),
    ]
    await asyncio.gather(*loops)


def later_asks(services: Services) -> list[Ask]:
    """The LLM recommendations asked for before the last stop, still to come."""
    assert services.later is not None
    return services.later.pending(services.tenants())


def create_app(
    settings: Settings,
    *,
    services: Services | None = None,
    build: Callable[[Settings, Metrics], Services] | None = None,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """The app; with ``services`` it is ready at once, else they are built in the
    background at start-up while /healthz already answers and /readyz says 503."""
    metrics = services.metrics if services is not None else metrics_for(settings)
    t = settings.tracing
    provider = tracer_provider or configure_tracing(
        enabled=t.enabled, service_name=t.service_name, exporter=t.exporter
    )
    tracer = get_tracer(provider) if provider is not None else None
    builder = build or (lambda s, m: build_services(s, metrics=m, tracer=tracer))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker: threading.Thread | None = None
        started = asyncio.Event()  # the services are built (or failed to be)
        loop = asyncio.get_running_loop()
        if app.state.services is not None:
            started.set()
        else:

            def start() -> None:
                try:
                    built = builder(settings, metrics)
                    app.state.idempotency = IdempotencyGuard(built.backends.idempotency, built.backends.locks)
                    app.state.services = built
                    perf = settings.performance
                    if not perf.naive:
                        tune_gc(freeze=perf.gc_freeze, young_threshold=perf.gc_young_threshold)
                except Exception as exc:
                    app.state.startup_error = f"{type(exc).__name__}: {exc}"
                    log.exception("service.start_failed")
                finally:
                    loop.call_soon_threadsafe(started.set)

            worker = threading.Thread(target=start, name="ir-startup", daemon=True)
            worker.start()
        reliability = settings.reliability
        loops = [
            asyncio.create_task(_replay_forever(app, reliability.dlq_replay_interval)),
            asyncio.create_task(_sweep_forever(app, reliability.idempotency_sweep_interval)),
            asyncio.create_task(_notify_forever(app, started)),
        ]
        try:
            yield
        finally:
            for task in loops:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if worker is not None:
                worker.join()
            if app.state.services is not None:
                await app.state.services.aclose()
                app.state.services.close()
            if provider is not None:
                provider.shutdown()  # flushes spans still batched

    app = FastAPI(title="incident-responder", version=__version__, lifespan=lifespan)
    app.state.services = services
    app.state.startup_error = None
    app.state.metrics = metrics
    app.state.metrics_access = ops.MetricsAccess(
        token=settings.metrics.token.get_secret_value(), elsewhere=settings.metrics.port is not None
    )
    keyring = KeyRing(settings.key_to_tenant(), settings.api_keys_file)
    limits = settings.rate_limit
    limiter = RequestLimiter(
        per_key=limits.per_key,
        per_tenant=limits.per_tenant,
        failed_auth_per_address=limits.failed_auth_per_address,
        storage_uri=limits.storage_uri or settings.redis.url.get_secret_value() or "memory://",
    )
    if services is not None:
        app.state.idempotency = IdempotencyGuard(services.backends.idempotency, services.backends.locks)
    install_error_handlers(app)
    for module in (
        incidents,
        alerts,
        tickets,
        feedback,
        runbooks,
        channels,
        silences,
        policy,
        shadow,
        ops,
        ui,
    ):
        app.include_router(module.router)

    http = settings.http
    app.add_middleware(
        Gate,
        keyring=keyring,
        limiter=limiter,
        policies=RoutePolicies(
            body=min(http.body_bytes, settings.max_body_bytes),
            batch=settings.max_body_bytes,
            runbook=min(http.runbook_body_bytes, settings.max_body_bytes),
            max_batch=settings.max_batch,
            max_alerts=settings.alerts.max_per_request,
        ),
        body_timeout=http.body_timeout,
        on_rate_limited=metrics.rate_limited.inc,
    )
    app.add_middleware(RequestMetrics, metrics=metrics)  # outside the gate: its refusals count too
    if provider is not None:
        instrument_app(app, provider)
    app.add_middleware(RequestIdMiddleware)  # outermost: every log line of a request carries its id
    return app


class RequestMetrics:
    """Pure ASGI middleware: counts requests by route and status and times them (a
    ``@app.middleware("http")`` costs a task and two memory streams per request)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app fails before answering, the error handler's answer is a 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")  # set by the router, in place
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.stage_seconds.labels("request").observe(time.perf_counter() - started)


def app_from_environment() -> FastAPI:
    """The app as each worker of ``serve --workers N`` builds it (settings from the environment)."""
    from incident_responder.logs import configure_logging
    from incident_responder.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)

"""The ``incident-responder`` command."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from incident_responder.errors import ConfigError, IncidentResponderError

if TYPE_CHECKING:
    from incident_responder.container import Services
from incident_responder.logs import configure_logging
from incident_responder.settings import Settings, describe, load_settings

app = typer.Typer(help="Deduplicate incidents, find the runbook, recommend the fix.", no_args_is_help=True)
runbooks_app = typer.Typer(help="Manage the runbook library.", no_args_is_help=True)
app.add_typer(runbooks_app, name="runbooks")
dlq_app = typer.Typer(help="Inspect and replay the dead-letter queue.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc


@contextlib.contextmanager
def _offline_services(data_dir: Path | None) -> Iterator[Services]:
    """The whole service without HTTP, for commands run next to (not against) a server.
    A domain error becomes a one-line message and exit code 1."""
    from incident_responder.container import build_services

    settings = _settings(data_dir=data_dir, insecure_no_auth=True)
    configure_logging("warning", settings.log_format)
    services = build_services(settings)
    try:
        yield services
    except IncidentResponderError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    finally:
        services.close()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (IR_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (IR_PORT)")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="data directory (IR_DATA_DIR)")] = None,
    insecure_no_auth: Annotated[
        bool, typer.Option("--insecure-no-auth", help="serve without API keys")
    ] = False,
    workers: Annotated[int | None, typer.Option(help="server processes (IR_WORKERS)")] = None,
) -> None:
    """Run the HTTP API."""
    from incident_responder.api import serving
    from incident_responder.api.app import create_app

    settings = _settings(
        host=host, port=port, data_dir=data_dir, insecure_no_auth=insecure_no_auth or None, workers=workers
    )
    configure_logging(settings.log_level, settings.log_format)
    # uvicorn shuts down gracefully on SIGTERM and then re-raises the signal under the
    # handler that was installed before it; a no-op there makes a clean stop exit 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    if settings.workers > 1:
        _serve_workers(
            settings,
            host=host,
            port=port,
            data_dir=data_dir,
            insecure_no_auth=insecure_no_auth,
            workers=workers,
        )
        return
    api = create_app(settings)
    serving.expose_metrics(settings, api.state.metrics.exposed())
    serving.run(api, settings)


def _serve_workers(settings: Settings, **given: Any) -> None:
    """N worker processes on one socket; they share Redis and the stores, and /metrics
    aggregates all of them through prometheus-client's multiprocess directory."""
    import tempfile

    from incident_responder.api import serving
    from incident_responder.metrics import multiprocess_registry

    # The workers read their settings from the environment: pass the command-line ones on.
    for name, value in given.items():
        if value not in (None, False):
            os.environ[f"IR_{name.upper()}"] = str(value)
    metrics_dir = settings.prometheus_multiproc_dir or Path(tempfile.mkdtemp(prefix="ir-metrics-"))
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):  # counts of an earlier run are not this run's
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    serving.expose_metrics(settings, multiprocess_registry(metrics_dir))
    serving.run(
        "incident_responder.api.app:app_from_environment", settings, factory=True, workers=settings.workers
    )


@app.command()
def config(show_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Print every setting (secrets masked)."""
    try:
        settings = load_settings()
    except ConfigError:
        settings = _settings(insecure_no_auth=True)  # show the rest even when keys are missing
    rows = describe(settings)
    if show_json:
        typer.echo(json.dumps({env: value for env, value, _ in rows}, indent=1))
        return
    width = max(len(env) for env, _, _ in rows)
    for env, value, doc in rows:
        typer.echo(f"{env:<{width}}  {value or '-':<24}  {doc}")


@app.command("prepare-model")
def prepare_model() -> None:
    """Export the embedding model for ONNX Runtime into its cache (done by ``make setup``;
    a server that finds no export makes it at start) and check it loads."""
    from incident_responder.backends.embedding.bert import BertEmbedder, load_embedder

    settings = _settings(insecure_no_auth=True)
    configure_logging("warning", settings.log_format)
    e = settings.embedding
    embedder = load_embedder(e.model_path, threads=1, runtime=e.runtime, onnx_cache_dir=e.onnx_cache_dir)
    runtime = embedder.runtime if isinstance(embedder, BertEmbedder) else "sentence-transformers"
    embedder.embed(["disk full on db-1"])
    typer.echo(f"embedding model ready: {runtime}")


@runbooks_app.command("import")
def import_runbooks(
    directory: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="folder of Markdown runbooks")
    ],
    tenant: Annotated[str, typer.Option(help="tenant that owns them")] = "default",
    data_dir: Annotated[Path | None, typer.Option(help="data directory (IR_DATA_DIR)")] = None,
) -> None:
    """Load every *.md file (id = file name, title = first heading) into the data dir.

    Run it while the server is stopped (the embedded index is single-process), or
    PUT /v1/runbooks/{id} against a running server instead.
    """
    from incident_responder.models import Runbook
    from incident_responder.pipeline.chunking import runbook_title

    files = sorted(directory.glob("*.md"))
    if not files:
        typer.echo(f"no *.md files in {directory}", err=True)
        raise typer.Exit(1)
    with _offline_services(data_dir) as services:
        created = 0
        for path in files:
            content = path.read_text(encoding="utf-8")
            runbook = Runbook(id=path.stem, title=runbook_title(content, path.stem), content=content)
            created += services.catalog.put(tenant, runbook)
    typer.echo(f"imported {len(files)} runbooks into tenant {tenant!r} ({created} new)")


@app.command("eval")
def evaluate_command(
    directory: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="eval data dir")],
    out: Annotated[Path | None, typer.Option(help="write the JSON report here")] = None,
    only: Annotated[str, typer.Option(help="all | dedup | runbooks")] = "all",
    limit: Annotated[int, typer.Option(help="first N reports per service (0: all)")] = 0,
) -> None:
    """Measure dedup and runbook retrieval on an eval dir (dedup.jsonl, runbooks/, runbook_queries.jsonl)."""
    import asyncio

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from incident_responder.evaluation import evaluate

    if only not in ("all", "dedup", "runbooks"):
        raise typer.BadParameter("--only must be all, dedup or runbooks")
    configure_logging("warning", "console")
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        tasks: dict[str, Any] = {}

        def tick(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)

        report = asyncio.run(evaluate(directory, only=only, limit=limit, progress=tick))

    if report.dedup_per_service:
        table = Table(title="dedup per service")
        for col in ("service", "reports", "groups", "tickets", "precision", "recall", "F1", "GA"):
            table.add_column(col, justify="right" if col != "service" else "left")
        for name, s in sorted(report.dedup_per_service.items()):
            table.add_row(
                name, str(s.reports), str(s.true_groups), str(s.tickets),
                f"{s.precision:.4f}", f"{s.recall:.4f}", f"{s.f1:.4f}", f"{s.ga:.4f}",
            )  # fmt: skip
        m = report.macro()
        table.add_row(
            "macro",
            "",
            "",
            "",
            f"{m['precision']:.4f}",
            f"{m['recall']:.4f}",
            f"{m['f1']:.4f}",
            f"{m['ga']:.4f}",
        )
        Console().print(table)
    if report.retrieval:
        table = Table(title="runbook retrieval")
        for col in ("queries", "variant", "R@1", "R@3", "MRR"):
            table.add_column(col)
        for variant, r in report.retrieval.items():
            table.add_row(
                str(r.queries), variant, f"{r.recall_at_1:.4f}", f"{r.recall_at_3:.4f}", f"{r.mrr:.4f}"
            )
        Console().print(table)
    if out is not None:
        out.write_text(json.dumps(report.to_json(), indent=1), encoding="utf-8")
    typer.echo(report.last_line())


@app.command()
def costs(
    url: Annotated[str | None, typer.Option(help="a running server's /metrics URL")] = None,
    file: Annotated[Path | None, typer.Option(help="a saved metrics text file")] = None,
    window_seconds: Annotated[float | None, typer.Option(help="the period the metrics cover")] = None,
) -> None:
    """Cost per incident and per month at the current rate, from the service's metrics."""
    from incident_responder.observability.costs import costs_command

    settings = _settings(insecure_no_auth=True)
    try:
        typer.echo(
            costs_command(
                url,
                file,
                settings.prices,
                window_seconds=window_seconds,
                vector_kind=settings.vector.kind,
                tickets_kind=settings.tickets.kind,
            )
        )
    except IncidentResponderError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def migrate(
    source: Annotated[
        str, typer.Option("--from", help="local (the data dir) or s3 (the IR_TICKETS__* S3 section)")
    ],
    target: Annotated[str, typer.Option("--to", help="local or s3")],
    data_dir: Annotated[Path | None, typer.Option(help="data directory (IR_DATA_DIR)")] = None,
) -> None:
    """Copy every ticket, incident, runbook and record from one document store to another."""
    from incident_responder.backends import build_object_store
    from incident_responder.migration import copy_objects
    from incident_responder.settings import LocalTicketSettings, S3TicketSettings

    settings = _settings(data_dir=data_dir, insecure_no_auth=True)
    configure_logging("warning", settings.log_format)

    def store_for(name: str) -> Any:
        if name == "local":
            return build_object_store(LocalTicketSettings(), settings.data_dir)
        if name == "s3":
            if not isinstance(settings.tickets, S3TicketSettings):
                raise typer.BadParameter(
                    "configure the S3 store first: IR_TICKETS__KIND=s3, IR_TICKETS__BUCKET=..."
                )
            return build_object_store(settings.tickets, settings.data_dir)
        raise typer.BadParameter(f"unknown store {name!r}: use local or s3")

    if source == target:
        raise typer.BadParameter("--from and --to must differ")
    try:
        report = copy_objects(
            store_for(source), store_for(target), progress=lambda where: typer.echo(f"  {where}")
        )
    except IncidentResponderError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"copied {report.copied} objects ({report.unchanged} already there) for {report.tenants} tenants"
    )
    typer.echo(
        "next: point IR_TICKETS__* at the target and run `incident-responder reindex` for the vector index"
    )


@app.command()
def reindex(
    data_dir: Annotated[Path | None, typer.Option(help="data directory (IR_DATA_DIR)")] = None,
) -> None:
    """Rebuild the configured vector index from the tickets and runbooks (idempotent)."""
    from incident_responder.migration import reindex as rebuild

    with _offline_services(data_dir) as services:
        r = rebuild(services)
    typer.echo(
        f"{r.tenants} tenants: {r.tickets} tickets checked, {r.vectors_written} vectors written, "
        f"{r.runbooks} runbooks indexed"
    )


@dlq_app.command("list")
def dlq_list(
    data_dir: Annotated[Path | None, typer.Option(help="data directory (IR_DATA_DIR)")] = None,
    limit: Annotated[int, typer.Option(help="most letters shown")] = 100,
) -> None:
    """Reports waiting to be applied, oldest first."""
    from datetime import UTC, datetime

    from incident_responder.reliability.dead_letters import SqliteDeadLetters

    settings = _settings(data_dir=data_dir, insecure_no_auth=True)
    if settings.dead_letters.kind == "sqs":
        # Receiving from SQS would hide the letters from the replaying replicas: count only.
        from incident_responder.backends.redis.coordination import make_client
        from incident_responder.container import build_dead_letters

        client = make_client(settings.redis.url.get_secret_value(), timeout=settings.redis.timeout)
        typer.echo(f"{build_dead_letters(settings, client).depth()} waiting in SQS")
        client.close()
        return
    letters = SqliteDeadLetters(settings.data_dir / "dead-letters.sqlite3")
    pending = letters.pending(limit)
    for letter in pending:
        at = datetime.fromtimestamp(letter.enqueued_at, UTC).isoformat(timespec="seconds")
        typer.echo(
            f"{letter.incident_id}  {letter.tenant}/{letter.report.service}  {at}  "
            f"attempts={letter.attempts}  {letter.last_error[:80]}"
        )
    typer.echo(f"{letters.depth()} waiting")


@dlq_app.command("replay")
def dlq_replay(
    data_dir: Annotated[Path | None, typer.Option(help="data directory (IR_DATA_DIR)")] = None,
) -> None:
    """Apply every waiting report now (the server does this by itself once backends recover)."""
    import asyncio

    with _offline_services(data_dir) as services:
        total = 0
        while True:
            applied, waiting = asyncio.run(services.replay_dead_letters())
            total += applied
            if applied == 0 or waiting == 0:
                break
    typer.echo(f"replayed {total}; {waiting} still waiting")
    if waiting:
        raise typer.Exit(1)


def main() -> None:
    app()

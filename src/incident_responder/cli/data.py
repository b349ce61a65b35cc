"""Commands on the stored data: runbooks, migration, reindex, the dead-letter queue, costs."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer

from incident_responder.cli.common import app, dlq_app, offline_services, runbooks_app, settings_or_exit
from incident_responder.errors import IncidentResponderError
from incident_responder.logs import configure_logging


@runbooks_app.command("import")
def import_runbooks(
    directory: Annotated[
        Path | None, typer.Argument(exists=True, file_okay=False, help="folder of Markdown runbooks")
    ] = None,
    examples: Annotated[
        bool, typer.Option("--examples", help="the example runbooks that come with the package")
    ] = False,
    tenant: Annotated[str, typer.Option(help="tenant that owns them")] = "default",
    data_dir: Annotated[Path | None, typer.Option(help="data directory (IR_DATA_DIR)")] = None,
) -> None:
    """Load every *.md file (id = file name, title = first heading) into the data dir.

    Run it while the server is stopped (the embedded index is single-process), or
    PUT /v1/runbooks/{id} against a running server instead.
    """
    from incident_responder.models import Runbook
    from incident_responder.pipeline.chunking import runbook_title

    if (directory is None) == (not examples):
        raise typer.BadParameter("give a folder of runbooks or --examples (one of them)")
    if directory is None:  # package data: a real folder in the installed package (wheel or editable)
        directory = Path(str(resources.files("incident_responder") / "examples" / "runbooks"))
    files = sorted(directory.glob("*.md"))
    if not files:
        typer.echo(f"no *.md files in {directory}", err=True)
        raise typer.Exit(1)
    with offline_services(data_dir) as services:
        created = 0
        for path in files:
            content = path.read_text(encoding="utf-8")
            runbook = Runbook(id=path.stem, title=runbook_title(content, path.stem), content=content)
            created += services.catalog.put(tenant, runbook)
    typer.echo(f"imported {len(files)} runbooks into tenant {tenant!r} ({created} new)")


@app.command()
def costs(
    url: Annotated[str | None, typer.Option(help="a running server's /metrics URL")] = None,
    file: Annotated[Path | None, typer.Option(help="a saved metrics text file")] = None,
    window_seconds: Annotated[float | None, typer.Option(help="the period the metrics cover")] = None,
) -> None:
    """Cost per incident and per month at the current rate, from the service's metrics."""
    from incident_responder.observability.costs import costs_command

    settings = settings_or_exit(insecure_no_auth=True)
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

    settings = settings_or_exit(data_dir=data_dir, insecure_no_auth=True)
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
    """Rebuild the configured vector index from the tickets and runbooks, tickets made by older
    normalizer rules brought to the current ones (idempotent)."""
    from incident_responder.migration import reindex as rebuild

    with offline_services(data_dir) as services:
        r = rebuild(services)
    typer.echo(
        f"{r.tenants} tenants: {r.tickets} tickets checked, {r.vectors_written} vectors written, "
        f"{r.runbooks} runbooks indexed, {r.renormalized} tickets brought to the current normalizer"
    )


@dlq_app.command("list")
def dlq_list(
    data_dir: Annotated[Path | None, typer.Option(help="data directory (IR_DATA_DIR)")] = None,
    limit: Annotated[int, typer.Option(help="most letters shown")] = 100,
) -> None:
    """Reports waiting to be applied, oldest first."""
    from datetime import UTC, datetime

    from incident_responder.backends.dead_letters.sqlite import SqliteDeadLetters

    settings = settings_or_exit(data_dir=data_dir, insecure_no_auth=True)
    if settings.dead_letters.kind == "sqs":
        # Receiving from SQS would hide the letters from the replaying replicas: count only.
        from incident_responder.backends import build_dead_letters
        from incident_responder.backends.redis_client import make_client

        client = make_client(settings.redis.url.get_secret_value(), timeout=settings.redis.timeout)
        typer.echo(
            f"{build_dead_letters(settings.dead_letters, settings.data_dir, client).depth()} waiting in SQS"
        )
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

    with offline_services(data_dir) as services:
        total = 0
        while True:
            applied, waiting = asyncio.run(services.replay_dead_letters())
            total += applied
            if applied == 0 or waiting == 0:
                break
    typer.echo(f"replayed {total}; {waiting} still waiting")
    if waiting:
        raise typer.Exit(1)

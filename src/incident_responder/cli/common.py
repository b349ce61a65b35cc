"""What every command shares: the typer apps, settings with a readable error, and the
service without HTTP for commands run next to a server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from incident_responder.errors import ConfigError, IncidentResponderError
from incident_responder.logs import configure_logging
from incident_responder.settings import Settings, load_settings

if TYPE_CHECKING:
    from incident_responder.container import Services

app = typer.Typer(help="Deduplicate incidents, find the runbook, recommend the fix.", no_args_is_help=True)
runbooks_app = typer.Typer(help="Manage the runbook library.", no_args_is_help=True)
app.add_typer(runbooks_app, name="runbooks")
dlq_app = typer.Typer(help="Inspect and replay the dead-letter queue.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
notify_app = typer.Typer(help="Inspect and replay the notification outbox.", no_args_is_help=True)
app.add_typer(notify_app, name="notify")


def settings_or_exit(**overrides: Any) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc


@contextlib.contextmanager
def offline_services(data_dir: Path | None) -> Iterator[Services]:
    """The whole service without HTTP, for commands run next to (not against) a server.
    A domain error becomes a one-line message and exit code 1."""
    from incident_responder.container import build_services

    settings = settings_or_exit(data_dir=data_dir, insecure_no_auth=True)
    configure_logging("warning", settings.log_format)
    services = build_services(settings)
    try:
        yield services
    except IncidentResponderError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    finally:
        services.close()

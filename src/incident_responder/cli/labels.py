"""``export-labels``: a tenant's tickets as an eval set; ``tickets merge|split``: corrections
sent to a running server."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from incident_responder.cli.common import app, settings_or_exit

tickets_app = typer.Typer(help="Correct a running server's grouping.", no_args_is_help=True)
app.add_typer(tickets_app, name="tickets")

_AGE = re.compile(r"^(\d{1,6})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    match = _AGE.match(text)
    if match is not None:
        return datetime.now(UTC) - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter("--since takes an age (7d, 12h, 30m) or an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command("export-labels")
def export_labels_command(
    out: Annotated[Path, typer.Argument(file_okay=False, help="directory to write the eval set to")],
    tenant: Annotated[str, typer.Option(help="whose tickets")] = "default",
    since: Annotated[str | None, typer.Option(help="reports since: an age (7d, 12h) or ISO time")] = None,
    service: Annotated[str | None, typer.Option(help="only this service's tickets")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="data directory (IR_DATA_DIR)")] = None,
) -> None:
    """Write a tenant's tickets (after corrections) as an eval set (dedup.jsonl, runbooks/) that
    ``incident-responder eval`` scores: each ticket is a true group. Safe beside a server."""
    from incident_responder.backends import build_object_store
    from incident_responder.labels import export_labels
    from incident_responder.repositories import RunbookRepository, TicketRepository

    moment = _since(since)
    settings = settings_or_exit(data_dir=data_dir, insecure_no_auth=True)
    objects = build_object_store(settings.tickets, settings.data_dir)
    report = export_labels(
        TicketRepository(objects), RunbookRepository(objects), tenant, out, since=moment, service=service
    )
    typer.echo(
        f"wrote {report.reports} reports of {report.tickets} tickets in {report.services} services "
        f"and {report.runbooks} runbooks to {out}"
    )


ServerUrl = Annotated[str, typer.Option(envvar="IR_SERVER_URL", help="the server's base URL")]
ApiKey = Annotated[str, typer.Option(envvar="IR_API_KEY", help="an API key of the tenant")]


def _post(url: str, key: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    import httpx

    try:
        r = httpx.post(
            url.rstrip("/") + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
    except httpx.HTTPError as exc:
        typer.echo(f"error: cannot reach {url}: {exc}", err=True)
        raise typer.Exit(1) from exc
    if r.status_code >= 400:
        try:
            message = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = r.text[:500]
        typer.echo(f"error: {r.status_code} {message}", err=True)
        raise typer.Exit(1)
    answer: dict[str, Any] = r.json()
    return answer


@tickets_app.command("merge")
def merge_command(
    ticket_id: Annotated[str, typer.Argument(help="the ticket to merge")],
    into: Annotated[str, typer.Option(help="the ticket that survives")],
    url: ServerUrl = "http://127.0.0.1:8080",
    api_key: ApiKey = "",
) -> None:
    """Merge a ticket into another: later reports like either join the survivor."""
    ticket = _post(url, api_key, f"/v1/tickets/{ticket_id}/merge", {"into": into})
    typer.echo(json.dumps({"ticket_id": ticket["ticket_id"], "occurrences": ticket["occurrences"]}))


@tickets_app.command("split")
def split_command(
    ticket_id: Annotated[str, typer.Argument(help="the ticket to split")],
    incident_ids: Annotated[list[str], typer.Argument(help="reports (inc_...) to move to a new ticket")],
    url: ServerUrl = "http://127.0.0.1:8080",
    api_key: ApiKey = "",
) -> None:
    """Move reports (and every report of their forms) to a new ticket; they never join this one again."""
    ticket = _post(url, api_key, f"/v1/tickets/{ticket_id}/split", {"incident_ids": incident_ids})
    typer.echo(json.dumps({"ticket_id": ticket["ticket_id"], "occurrences": ticket["occurrences"]}))

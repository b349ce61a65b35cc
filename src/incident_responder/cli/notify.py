"""``notify list|replay``: the notification outbox, beside a running server (it shares the
outbox: SQLite under the data dir, or Redis)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import typer

from incident_responder.cli.common import notify_app, settings_or_exit
from incident_responder.errors import IncidentResponderError
from incident_responder.ports import Outbox

DataDir = Annotated[Path | None, typer.Option(help="data directory (IR_DATA_DIR)")]


@contextlib.contextmanager
def _outbox(data_dir: Path | None) -> Iterator[Outbox]:
    from incident_responder.backends import build_outbox
    from incident_responder.backends.redis_client import make_client

    settings = settings_or_exit(data_dir=data_dir, insecure_no_auth=True)
    client = None
    if settings.notifications.outbox == "redis":
        client = make_client(settings.redis.url.get_secret_value(), timeout=settings.redis.timeout)
    outbox = build_outbox(settings.notifications.outbox, settings.data_dir, client)
    try:
        yield outbox
    except IncidentResponderError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    finally:
        outbox.close()
        if client is not None:
            client.close()


@notify_app.command("list")
def notify_list(
    state: Annotated[str, typer.Option(help="dead, pending or sent")] = "dead",
    limit: Annotated[int, typer.Option(help="most messages shown")] = 100,
    data_dir: DataDir = None,
) -> None:
    """Notifications in the outbox, oldest first (by default the dead ones: given up)."""
    if state not in ("dead", "pending", "sent"):
        typer.echo("error: --state must be dead, pending or sent", err=True)
        raise typer.Exit(2)
    chosen: Literal["dead", "pending", "sent"] = state  # type: ignore[assignment]
    with _outbox(data_dir) as outbox:
        counts = outbox.counts()
        messages = outbox.listing(chosen, limit)
    typer.echo(" ".join(f"{k}={v}" for k, v in counts.items()))
    for m in messages:
        created = datetime.fromtimestamp(m.created_at, UTC).isoformat(timespec="seconds")
        typer.echo(
            f"{m.message_id}  {created}  {m.tenant}/{m.channel_id} ({m.channel_kind})  {m.kind} "
            f"{m.ticket_id}  attempts={m.attempts}  {m.last_error}"
        )


@notify_app.command("replay")
def notify_replay(
    message_ids: Annotated[list[str] | None, typer.Argument(help="dead messages to send again")] = None,
    all_dead: Annotated[bool, typer.Option("--all", help="every dead message")] = False,
    data_dir: DataDir = None,
) -> None:
    """Put dead messages back in line: a running server delivers them within a second or so."""
    if not message_ids and not all_dead:
        typer.echo("error: name message ids or pass --all", err=True)
        raise typer.Exit(2)
    with _outbox(data_dir) as outbox:
        ids = list(message_ids or [])
        if all_dead:
            done: set[str] = set()
            while batch := [m.message_id for m in outbox.listing("dead", 1_000) if m.message_id not in done]:
                done.update(batch)
                now = time.time()
                for message_id in batch:
                    outbox.replay(message_id, now)
            typer.echo(f"replayed {len(done)} messages")
            return
        missing = [i for i in ids if not outbox.replay(i, time.time())]
    for message_id in missing:
        typer.echo(f"not a dead message: {message_id}", err=True)
    typer.echo(f"replayed {len(ids) - len(missing)} messages")
    if missing:
        raise typer.Exit(1)

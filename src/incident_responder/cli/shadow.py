"""``shadow promote``: make the candidate grouping (``IR_SHADOW__*``) the live one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from incident_responder.cli.common import app, settings_or_exit

shadow_app = typer.Typer(help="The shadow (candidate) grouping.", no_args_is_help=True)
app.add_typer(shadow_app, name="shadow")

_THRESHOLDS = ("auto_merge", "related", "template_similarity")


@shadow_app.command("promote")
def promote_command(
    config_file: Annotated[
        Path | None,
        typer.Option(envvar="IR_CONFIG_FILE", help="the dotenv file the service reads its settings from"),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="print the changes, write nothing")] = False,
) -> None:
    """Write the candidate's thresholds and normalizer table as the live settings
    (IR_DEDUP__*) in the settings file and turn the shadow off; restart each replica to make
    it live (a changed table re-normalizes stored tickets at start-up)."""
    from dotenv import dotenv_values, set_key, unset_key

    from incident_responder.pipeline.normalize import normalizer_without

    if config_file is None:
        typer.echo("error: name the settings file (--config-file or IR_CONFIG_FILE)", err=True)
        raise typer.Exit(2)
    if not config_file.is_file():
        typer.echo(f"error: {config_file} does not exist", err=True)
        raise typer.Exit(2)
    settings = settings_or_exit(config_file=config_file, insecure_no_auth=True)
    candidate = settings.shadow
    if not candidate.enabled:
        typer.echo("error: no shadow grouping is configured (IR_SHADOW__ENABLED is not true)", err=True)
        raise typer.Exit(1)
    changes: dict[str, str] = {}
    for name in _THRESHOLDS:
        value = getattr(candidate, name)
        if value is not None:
            changes[f"IR_DEDUP__{name.upper()}"] = repr(float(value))
    if candidate.without_rules is not None:
        try:
            normalizer_without(candidate.without_rules)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        changes["IR_DEDUP__WITHOUT_RULES"] = json.dumps(sorted(candidate.without_rules))
    changes["IR_SHADOW__ENABLED"] = "false"
    stale = [
        k for k in dotenv_values(config_file) if k.startswith("IR_SHADOW__") and k != "IR_SHADOW__ENABLED"
    ]
    for key, value in changes.items():
        typer.echo(f"set   {key}={value}")
    for key in stale:
        typer.echo(f"unset {key}")
    if dry_run:
        return
    for key, value in changes.items():
        set_key(config_file, key, value, quote_mode="never")
    for key in stale:
        unset_key(config_file, key)
    shadowed = sorted(k for k in os.environ if k.startswith(("IR_SHADOW__", "IR_DEDUP__")) and k in changes)
    if shadowed:
        typer.echo(f"warning: the environment overrides the file for {', '.join(shadowed)}", err=True)
    typer.echo(f"promoted: restart the service (each replica) to make it live ({config_file})")

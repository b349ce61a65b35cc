"""The ``incident-responder`` command: one typer app, its commands in the modules beside this one."""

from __future__ import annotations

from incident_responder.cli import data, evaluate, labels, notify, serve, shadow  # noqa: F401 - each registers its commands
from incident_responder.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    app()

"""``serve``, ``config`` and ``prepare-model``: running the service."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from incident_responder.cli.common import app, settings_or_exit
from incident_responder.errors import ConfigError
from incident_responder.logs import configure_logging
from incident_responder.settings import Settings, describe, load_settings, reference_markdown


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

    settings = settings_or_exit(
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
    from incident_responder.observability.metrics import multiprocess_registry

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
def config(
    show_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="print the reference of every setting (docs/settings.md)")
    ] = False,
) -> None:
    """Print every setting (secrets masked)."""
    if markdown:
        typer.echo(reference_markdown(), nl=False)
        return
    try:
        settings = load_settings()
    except ConfigError:
        settings = settings_or_exit(insecure_no_auth=True)  # show the rest even when keys are missing
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

    settings = settings_or_exit(insecure_no_auth=True)
    configure_logging("warning", settings.log_format)
    e = settings.embedding
    embedder = load_embedder(
        e.model_path, threads=1, runtime=e.runtime, onnx_cache_dir=settings.onnx_cache_dir
    )
    runtime = embedder.runtime if isinstance(embedder, BertEmbedder) else "sentence-transformers"
    embedder.embed(["disk full on db-1"])
    typer.echo(f"embedding model ready: {runtime}")

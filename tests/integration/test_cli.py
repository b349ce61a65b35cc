"""The command line: config, runbooks import, eval, dlq, costs (our own fixture data)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from incident_responder.cli import app
from tests.s3_servers import S3Server

FIXTURES = Path(__file__).parent.parent / "fixtures" / "evalset"
EXAMPLES = Path(__file__).parent.parent.parent / "src" / "incident_responder" / "examples" / "runbooks"


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[CliRunner]:
    monkeypatch.setenv("IR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("IR_API_KEYS", raising=False)
    yield CliRunner()
    # The commands configure structlog to write to the runner's (now closed) stderr.
    structlog.reset_defaults()


def test_config_masks_secrets(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IR_API_KEYS", "acme:super-secret-key")
    monkeypatch.setenv("IR_REDIS__URL", "redis://:hunter22@redis:6379/0")
    result = runner.invoke(app, ["config", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["IR_API_KEYS"] == "****" and shown["IR_REDIS__URL"] == "****"
    assert "super-secret" not in result.output and "hunter22" not in result.output
    assert shown["IR_VECTOR__KIND"] == "qdrant-edge" and shown["IR_TICKETS__KIND"] == "local"


def test_config_reports_invalid_settings(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IR_TICKETS__KIND", "ftp")
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 2 and "tickets" in result.output


def test_serve_refuses_to_start_without_keys(runner: CliRunner) -> None:
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2 and "IR_API_KEYS" in result.output


def test_import_then_list_dead_letters(runner: CliRunner) -> None:
    result = runner.invoke(app, ["runbooks", "import", str(EXAMPLES), "--tenant", "acme"])
    assert result.exit_code == 0, result.output
    assert "imported 12 runbooks into tenant 'acme' (12 new)" in result.output
    again = runner.invoke(app, ["runbooks", "import", str(EXAMPLES), "--tenant", "acme"])
    assert "(0 new)" in again.output
    dlq = runner.invoke(app, ["dlq", "list"])
    assert dlq.exit_code == 0 and "0 waiting" in dlq.output


def test_eval_reports_metrics(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["eval", str(FIXTURES), "--out", str(out)])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("dedup_f1=1.0000 ga=1.0000 runbook_r@1=")
    report = json.loads(out.read_text())
    assert set(report["dedup"]["per_service"]) == {"api", "edge"}
    assert report["retrieval"]["overall"]["queries"] == 3
    assert report["retrieval"]["overall"]["recall_at_3"] == 1.0


def test_costs_from_a_metrics_file(runner: CliRunner, tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.txt"
    metrics.write_text(
        '# TYPE ir_incidents_total counter\nir_incidents_total{status="new"} 10.0\n'
        '# TYPE ir_llm_tokens_total counter\nir_llm_tokens_total{direction="in"} 1000000.0\n'
        'ir_llm_tokens_total{direction="out"} 0.0\n'
    )
    result = runner.invoke(app, ["costs", "--file", str(metrics), "--window-seconds", "86400"])
    assert result.exit_code == 0, result.output
    assert "0.15" in result.output


def test_migrate_local_to_s3(runner: CliRunner, monkeypatch: pytest.MonkeyPatch, moto_s3: S3Server) -> None:
    from incident_responder.backends.objects.local import LocalObjectStore

    data = Path(os.environ["IR_DATA_DIR"])
    local = LocalObjectStore(data / "objects")
    local.put("acme/tickets/tkt_1.json", b"{}")
    local.put("acme/runbooks/r.json", b"{}")
    prefix = f"cli-{uuid.uuid4().hex[:8]}"
    for name, value in {
        "IR_TICKETS__KIND": "s3",
        "IR_TICKETS__BUCKET": moto_s3.bucket,
        "IR_TICKETS__PREFIX": prefix,
        "IR_TICKETS__ENDPOINT_URL": moto_s3.endpoint_url,
        "IR_TICKETS__ACCESS_KEY_ID": moto_s3.access_key_id,
        "IR_TICKETS__SECRET_ACCESS_KEY": moto_s3.secret_access_key,
    }.items():
        monkeypatch.setenv(name, value)
    result = runner.invoke(app, ["migrate", "--from", "local", "--to", "s3"])
    assert result.exit_code == 0, result.output
    assert "copied 2 objects (0 already there) for 1 tenants" in result.output
    with moto_s3.store(prefix) as target:
        assert target.list_keys("acme/tickets/") == ["acme/tickets/tkt_1.json"]
    same = runner.invoke(app, ["migrate", "--from", "local", "--to", "local"])
    assert same.exit_code != 0

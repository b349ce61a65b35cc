"""`tickets merge|split` against a running server, and `export-labels` then `eval` on its data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import structlog
from typer.testing import CliRunner

from incident_responder.cli import app
from tests.contract.test_corrections_api import queue_log
from tests.helpers import db_log, disk_log
from tests.servers import ServeProcess

KEY = "acme-key-123"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServeProcess]:
    process = ServeProcess(tmp_path / "data", {"IR_API_KEYS": f"acme:{KEY}"}).start()
    yield process
    process.stop()


@pytest.fixture
def runner() -> Iterator[CliRunner]:
    yield CliRunner()
    structlog.reset_defaults()


def _post(server: ServeProcess, service: str, log: str) -> dict[str, str]:
    r = httpx.post(
        f"{server.url}/v1/incidents", json={"service": service, "log": log}, headers={"X-API-Key": KEY}
    )
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


def test_merge_and_split_from_the_command_line_then_export_and_eval(
    server: ServeProcess, runner: CliRunner, tmp_path: Path
) -> None:
    alpha = _post(server, "q", queue_log("alpha", 1))
    beta = _post(server, "q", queue_log("beta", 2))
    db, disk = _post(server, "api", db_log(1)), _post(server, "api", disk_log(1))
    assert alpha["ticket_id"] == beta["ticket_id"] and db["ticket_id"] != disk["ticket_id"]
    common = ["--url", server.url, "--api-key", KEY]

    split = runner.invoke(app, ["tickets", "split", alpha["ticket_id"], beta["incident_id"], *common])
    assert split.exit_code == 0, split.output
    new_id = json.loads(split.output)["ticket_id"]
    assert new_id != alpha["ticket_id"]
    assert _post(server, "q", queue_log("gamma", 3))["ticket_id"] == new_id

    merge = runner.invoke(app, ["tickets", "merge", disk["ticket_id"], "--into", db["ticket_id"], *common])
    assert merge.exit_code == 0, merge.output
    assert json.loads(merge.output) == {"ticket_id": db["ticket_id"], "occurrences": 2}

    # refusals come back as one line and exit 1
    again = runner.invoke(app, ["tickets", "merge", db["ticket_id"], "--into", disk["ticket_id"], *common])
    assert again.exit_code == 1 and "409" in again.output
    wrong_key = runner.invoke(
        app,
        [
            "tickets",
            "merge",
            disk["ticket_id"],
            "--into",
            db["ticket_id"],
            "--url",
            server.url,
            "--api-key",
            "nope",
        ],
    )
    assert wrong_key.exit_code == 1 and "401" in wrong_key.output
    unreachable = runner.invoke(
        app, ["tickets", "merge", "tkt_x", "--into", "tkt_y", "--url", "http://127.0.0.1:9", "--api-key", KEY]
    )
    assert unreachable.exit_code == 1 and "cannot reach" in unreachable.output

    # export beside the running server: the tickets after corrections are the groups
    out = tmp_path / "labels"
    exported = runner.invoke(
        app,
        ["export-labels", str(out), "--tenant", "acme", "--since", "1h", "--data-dir", str(server.data_dir)],
    )
    assert exported.exit_code == 0, exported.output
    assert "wrote 5 reports of 3 tickets in 2 services" in exported.output
    rows = [json.loads(line) for line in (out / "dedup.jsonl").read_text().splitlines()]
    groups = {r["log"]: r["group"] for r in rows}
    assert groups[db_log(1)] == groups[disk_log(1)] == db["ticket_id"]
    assert groups[queue_log("beta", 2)] == groups[queue_log("gamma", 3)] == new_id
    assert groups[queue_log("alpha", 1)] == alpha["ticket_id"]
    assert [r["at"] for r in rows] == sorted(r["at"] for r in rows)

    nothing = runner.invoke(
        app, ["export-labels", str(tmp_path / "none"), "--tenant", "acme", "--since", "2999-01-01T00:00:00"]
    )
    assert nothing.exit_code == 0 and "wrote 0 reports" in nothing.output
    bad = runner.invoke(app, ["export-labels", str(tmp_path / "bad"), "--since", "last week"])
    assert bad.exit_code == 2

    # the exported set is scored per service (pairwise precision/recall), in a fresh data dir
    scored = runner.invoke(app, ["eval", str(out), "--only", "dedup"])
    assert scored.exit_code == 0, scored.output
    assert "dedup per service" in scored.output and "api" in scored.output
    assert scored.output.strip().splitlines()[-1].startswith("dedup_f1=")

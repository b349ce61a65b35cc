"""serve --workers 2: the workers share one socket, Redis and the stores; /metrics
adds up every worker's counts, whichever worker answers the scrape."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import db_log, disk_log, tls_log
from tests.servers import ServeProcess

KEY = {"X-API-Key": "acme-key-123"}


@pytest.fixture
def two_workers(tmp_path: Path, pgvector_dsn: str) -> Iterator[tuple[int, Path]]:
    env = {
        "IR_API_KEYS": "acme:acme-key-123",
        "IR_VECTOR__KIND": "pgvector",
        "IR_VECTOR__DSN": pgvector_dsn,
        "IR_VECTOR__TABLE": f"workers_{uuid.uuid4().hex[:10]}",
        "IR_REDIS__URL": "redis://127.0.0.1:6379/0",
        "IR_RATE_LIMIT__PER_KEY": "",
        "IR_RATE_LIMIT__PER_TENANT": "",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    # several answers in a row: both workers are up
    server = ServeProcess(tmp_path / "data", env, args=("--workers", "2"), ready_answers=6)
    server.start()
    try:
        yield server.port, tmp_path / "metrics"
    finally:
        server.stop()


def _incidents_total(text: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "ir_incidents"
        for sample in family.samples
        if sample.name == "ir_incidents_total"
    )


def _file_incidents(path: Path) -> float:
    from prometheus_client.mmap_dict import MmapedDict

    return sum(
        value
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path))
        if json.loads(key)[1] == "ir_incidents_total"
    )


@pytest.mark.slow
def test_two_workers_share_state_and_metrics(two_workers: tuple[int, Path]) -> None:
    port, metrics_dir = two_workers
    logs = [db_log, disk_log, tls_log]
    tickets = set()
    for i in range(30):
        # A new connection each time, so the kernel spreads requests over both workers.
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/incidents",
            json={"service": "api", "log": logs[i % 3](i)},
            headers=KEY,
        )
        assert r.status_code in (200, 201), r.text
        tickets.add(r.json()["ticket_id"])
    assert len(tickets) == 3
    totals = {_incidents_total(httpx.get(f"http://127.0.0.1:{port}/metrics").text) for _ in range(8)}
    assert totals == {30.0}, totals
    # Both workers served incidents (each keeps its own counter file) and the scrape added them up.
    per_worker = [_file_incidents(path) for path in sorted(metrics_dir.glob("counter_*.db"))]
    assert len(per_worker) == 2 and all(n > 0 for n in per_worker) and sum(per_worker) == 30, per_worker

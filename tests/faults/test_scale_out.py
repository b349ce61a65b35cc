"""1,000 concurrent identical incidents across 4 server processes that share Redis,
an S3 server (moto) and a pgvector index: exactly one ticket with 1,000 occurrences."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.s3_servers import S3Server
from tests.servers import ServeProcess

KEY = {"X-API-Key": "acme-key-123"}
REPORTS = 1000
PROCESSES = 4


def _log(i: int) -> str:
    return (
        f"2026-11-20T10:{i % 60:02d}:{i % 59:02d}Z ERROR checkout[{4000 + i}]: "
        f"payment provider timed out after {100 + i}ms (order {900000 + i})"
    )


@pytest.fixture
def fleet(tmp_path: Path, moto_s3: S3Server, pgvector_dsn: str) -> Iterator[list[ServeProcess]]:
    with redis.Redis.from_url("redis://127.0.0.1:6379/0") as client:
        client.ping()
    run = uuid.uuid4().hex[:10]
    env = {
        "IR_API_KEYS": "acme:acme-key-123",
        "IR_TICKETS__KIND": "s3",
        "IR_TICKETS__BUCKET": moto_s3.bucket,
        "IR_TICKETS__PREFIX": f"scale-{run}",
        "IR_TICKETS__ENDPOINT_URL": moto_s3.endpoint_url,
        "IR_TICKETS__ACCESS_KEY_ID": moto_s3.access_key_id,
        "IR_TICKETS__SECRET_ACCESS_KEY": moto_s3.secret_access_key,
        "IR_VECTOR__KIND": "pgvector",
        "IR_VECTOR__DSN": pgvector_dsn,
        "IR_VECTOR__TABLE": f"scale_{run}",
        "IR_REDIS__URL": "redis://127.0.0.1:6379/0",
        "IR_RATE_LIMIT__PER_KEY": "",
        "IR_RATE_LIMIT__PER_TENANT": "",
    }
    servers = [ServeProcess(tmp_path / f"r{n}", env) for n in range(PROCESSES)]
    try:
        for server in servers:
            server.spawn()
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


def _sample(exposition: str, name: str) -> float:
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} is not exported")


def _server_logs(fleet: list[ServeProcess]) -> str:
    return "servers' logs (warnings and up):\n" + "\n".join(server.log()[-1500:] for server in fleet)


@pytest.mark.slow
def test_thousand_identical_incidents_across_four_processes(fleet: list[ServeProcess]) -> None:
    async def storm() -> list[httpx.Response]:
        clients = [httpx.AsyncClient(base_url=server.url, headers=KEY, timeout=120) for server in fleet]
        gate = asyncio.Semaphore(64)

        async def one(i: int) -> httpx.Response:
            async with gate:
                return await clients[i % len(clients)].post(
                    "/v1/incidents", json={"service": "checkout", "log": _log(i)}
                )

        try:
            return await asyncio.gather(*(one(i) for i in range(REPORTS)))
        finally:
            for c in clients:
                await c.aclose()

    started = time.perf_counter()
    replies = asyncio.run(storm())
    seconds = time.perf_counter() - started
    codes = Counter(r.status_code for r in replies)
    print(f"\n{REPORTS} reports, {PROCESSES} processes: {seconds:.1f}s, {dict(codes)}")
    failed = [r for r in replies if r.status_code not in (200, 201)]
    assert not failed, (
        f"{len(failed)} failed replies, e.g. {failed[0].status_code} {failed[0].text[:500]}\n"
        + _server_logs(fleet)
    )
    assert codes == Counter({201: 1, 200: REPORTS - 1})
    tickets = {r.json()["ticket_id"] for r in replies}
    assert len(tickets) == 1
    ticket = httpx.get(f"{fleet[0].url}/v1/tickets/{tickets.pop()}", headers=KEY, timeout=10).json()
    assert ticket["occurrences"] == REPORTS, _server_logs(fleet)
    # The replicas took turns writing the ticket: no compare-and-swap round was lost.
    lost = [
        _sample(httpx.get(f"{server.url}/metrics", timeout=10).text, "ir_ticket_write_conflicts_total")
        for server in fleet
    ]
    assert lost == [0.0] * PROCESSES

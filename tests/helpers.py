"""Fixture data written for these tests (no third-party log data), and a metrics reader."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

DB_RUNBOOK = """# Database connection refused

## Symptoms
Applications log `connection refused` when connecting to PostgreSQL on port 5432.

## Mitigation
1. Check that the database pod is running: `kubectl get pods -l app=postgres`.
2. Restart the connection pooler: `kubectl rollout restart deploy/pgbouncer`.
"""

DISK_RUNBOOK = """# Disk full

## Symptoms
Writes fail with `No space left on device`.

## Mitigation
1. Find the largest directories: `du -xh / | sort -h | tail`.
2. Rotate and compress old logs.
"""


def db_log(n: int) -> str:
    return (
        f"2026-11-20T10:{n % 60:02d}:00Z ERROR payments-api[{1000 + n}]: could not connect to database "
        f"at 10.0.{n % 250}.{(n * 7) % 250}:5432: connection refused (attempt {n})"
    )


def disk_log(n: int) -> str:
    return (
        f"2026-11-20T11:{n % 60:02d}:13Z ERROR writer[{200 + n}]: "
        f"write /var/lib/app/seg-{n}.dat failed: No space left on device"
    )


def tls_log(n: int) -> str:
    return (
        f"2026-11-20T12:00:{n % 60:02d}Z WARN gateway: "
        f"TLS handshake with upstream auth-{n}.internal failed: certificate has expired"
    )


def metric_total(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The sum of every sample called ``name`` whose labels include ``labels``."""
    return sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )

"""The dead-letter queue: reports accepted while a backend was down, kept durably.

Local default: one SQLite file under the data dir (WAL journal, ``synchronous=FULL``:
a row is on disk before ``put`` returns, and several server processes may share it).
A letter is replayed until it is applied once; replay is idempotent because the
pipeline skips an incident id it has already recorded.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from incident_responder.errors import BackendUnavailable
from incident_responder.models import DeadLetter, IncidentReport

_SCHEMA = """
CREATE TABLE IF NOT EXISTS letters (
    incident_id TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    report      TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT NOT NULL DEFAULT '',
    done_at     REAL
);
CREATE INDEX IF NOT EXISTS letters_pending ON letters (done_at, enqueued_at);
"""


class SqliteDeadLetters:
    """The :class:`~incident_responder.ports.DeadLetterQueue` in one SQLite file (a letter is on
    disk before ``put`` returns); the processes of one host may share it."""

    def __init__(self, path: Path) -> None:
        self._path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self._path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"dead-letter queue unavailable: {exc}") from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            yield db
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"dead-letter queue failed: {exc}") from exc
        finally:
            db.close()

    def put(self, tenant: str, incident_id: str, report: IncidentReport, error: str) -> None:
        """Durably record a report that could not be processed now."""
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO letters (incident_id, tenant, report, enqueued_at, last_error)"
                " VALUES (?,?,?,?,?)",
                (incident_id, tenant, report.model_dump_json(), time.time(), error[:500]),
            )

    def get(self, tenant: str, incident_id: str) -> DeadLetter | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT * FROM letters WHERE incident_id = ? AND tenant = ?", (incident_id, tenant)
            ).fetchone()
        return _letter(row) if row else None

    def pending(self, limit: int = 100) -> list[DeadLetter]:
        """Oldest first, so replay keeps the order reports arrived in."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM letters WHERE done_at IS NULL ORDER BY enqueued_at, rowid LIMIT ?", (limit,)
            ).fetchall()
        return [_letter(r) for r in rows]

    def mark_done(self, incident_id: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE letters SET done_at = ? WHERE incident_id = ?", (time.time(), incident_id))

    def mark_failed(self, incident_id: str, error: str) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE letters SET attempts = attempts + 1, last_error = ? WHERE incident_id = ?",
                (error[:500], incident_id),
            )

    def depth(self) -> int:
        with self._connect() as db:
            (n,) = db.execute("SELECT COUNT(*) FROM letters WHERE done_at IS NULL").fetchone()
        return int(n)


def _letter(row: tuple[object, ...]) -> DeadLetter:
    incident_id, tenant, report, enqueued_at, attempts, last_error, done_at = row
    return DeadLetter(
        incident_id=str(incident_id),
        tenant=str(tenant),
        report=IncidentReport.model_validate_json(str(report)),
        enqueued_at=float(str(enqueued_at)),
        attempts=int(str(attempts)),
        last_error=str(last_error),
        done=done_at is not None,
    )

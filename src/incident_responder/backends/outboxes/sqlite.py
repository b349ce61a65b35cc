"""The notification outbox in one SQLite file: messages kept durably until delivered or given up.

Local default: one file under the data dir (WAL journal, ``synchronous=FULL``: a message is
on disk before ``put`` returns), which several server processes may share. Every change
runs in a ``BEGIN IMMEDIATE`` transaction, so writers take turns: two processes never claim
the same message while its lease runs, and a stream's order holds across processes.

A stream (tenant, channel id, ticket id) hands out its messages in the order they were put
(an autoincrement ``seq``); only its first pending message, its *head*, is ever claimable.
A message is leased by moving its ``next_at`` to the end of the lease, so one whose
dispatcher died is handed out again once the lease ends (at least once, never out of order).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import get_args

from incident_responder.errors import BackendUnavailable
from incident_responder.notifications.model import MessageState, OutboxMessage

_ERROR_CHARS = 500
_STATES: tuple[MessageState, ...] = get_args(MessageState)

# Stream order is kept by a ``head`` flag, set on exactly the first pending message (lowest
# seq) of each stream and maintained by every write (put, sent, bury, replay) in the same
# transaction, with one look-up in ``messages_stream``. Claiming is then a range scan of the
# partial index ``messages_due`` (heads only, by next_at): it reads the rows it hands out and
# nothing else, however many messages are delivered, dead, or queued behind a head. (The
# alternative, every due pending row filtered by a correlated NOT EXISTS on an earlier pending
# row of its stream, would read each row waiting behind a head on every claim: a busy ticket
# with a long backlog would slow every claim down.)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,  -- put order (a replay takes a new one)
    message_id   TEXT NOT NULL UNIQUE,
    tenant       TEXT NOT NULL,
    channel_id   TEXT NOT NULL,
    channel_kind TEXT NOT NULL,
    kind         TEXT NOT NULL,
    ticket_id    TEXT NOT NULL,
    url          TEXT NOT NULL,
    body         TEXT NOT NULL,
    headers      TEXT NOT NULL,  -- JSON object
    created_at   REAL NOT NULL,
    next_at      REAL NOT NULL,
    attempts     INTEGER NOT NULL,
    last_error   TEXT NOT NULL,
    state        TEXT NOT NULL,  -- pending, sent, dead
    head         INTEGER NOT NULL DEFAULT 0  -- 1: the first pending message of its stream
);
CREATE INDEX IF NOT EXISTS messages_due ON messages (next_at, seq) WHERE head = 1;
CREATE INDEX IF NOT EXISTS messages_stream
    ON messages (tenant, channel_id, ticket_id, seq) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS messages_state ON messages (state, created_at, seq);
"""

_COLUMNS = (
    "message_id, tenant, channel_id, channel_kind, kind, ticket_id, url, body, headers,"
    " created_at, next_at, attempts, last_error, state"
)
_INSERT = (
    f"INSERT OR IGNORE INTO messages ({_COLUMNS}, head) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,"
    " ? = 'pending' AND NOT EXISTS (SELECT 1 FROM messages WHERE state = 'pending'"
    " AND tenant = ? AND channel_id = ? AND ticket_id = ?))"
)
# The stream's first pending message, after its head left (sent, buried) or none was pending.
_PROMOTE = (
    "UPDATE messages SET head = 1 WHERE seq = (SELECT seq FROM messages WHERE state = 'pending'"
    " AND tenant = ? AND channel_id = ? AND ticket_id = ? ORDER BY seq LIMIT 1)"
)


class SqliteOutbox:
    """The outbox in one SQLite file under the data dir, shared by the processes of one host."""

    def __init__(self, path: Path) -> None:
        self._path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendUnavailable(f"outbox unavailable: {exc}") from exc
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self._path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"outbox unavailable: {exc}") from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            yield db
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"outbox failed: {exc}") from exc
        finally:
            db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds the file's write lock from its first statement, so
        what it reads cannot change under it (other processes' writers wait their turn)."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def put(self, messages: Sequence[OutboxMessage]) -> None:
        """Stored as given (a message put in another state stays out of its stream)."""
        if not messages:
            return
        with self._transaction() as db:
            for m in messages:
                db.execute(
                    _INSERT,
                    (
                        m.message_id, m.tenant, m.channel_id, m.channel_kind, m.kind, m.ticket_id,
                        m.url, m.body, json.dumps(m.headers), m.created_at, m.next_at, m.attempts,
                        m.last_error[:_ERROR_CHARS], m.state, m.state, m.tenant, m.channel_id, m.ticket_id,
                    ),
                )  # fmt: skip

    def claim(self, now: float, limit: int, lease: float) -> list[OutboxMessage]:
        """Due heads, longest due first (by ``next_at``, then put order); each leased until
        ``now + lease`` (the ``next_at`` of the messages returned)."""
        if limit <= 0:
            return []
        until = now + lease
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS}, seq FROM messages WHERE head = 1 AND next_at <= ?"
                " ORDER BY next_at, seq LIMIT ?",
                (now, limit),
            ).fetchall()
            db.executemany("UPDATE messages SET next_at = ? WHERE seq = ?", [(until, r[-1]) for r in rows])
        return [_message(r[:-1]).model_copy(update={"next_at": until}) for r in rows]

    def sent(self, message_id: str) -> None:
        """A message not pending (sent already, dead, unknown) is left as it is."""
        with self._transaction() as db:
            self._finish(db, message_id, "sent", None)

    def retry(self, message_id: str, next_at: float, error: str, *, counted: bool = True) -> None:
        """A message not pending is left as it is: a late answer never revives it."""
        with self._transaction() as db:
            db.execute(
                "UPDATE messages SET attempts = attempts + ?, last_error = ?, next_at = ?"
                " WHERE message_id = ? AND state = 'pending'",
                (int(counted), error[:_ERROR_CHARS], next_at, message_id),
            )

    def bury(self, message_id: str, error: str) -> None:
        """A message not pending is left as it is."""
        with self._transaction() as db:
            self._finish(db, message_id, "dead", error[:_ERROR_CHARS])

    @staticmethod
    def _finish(db: sqlite3.Connection, message_id: str, state: MessageState, error: str | None) -> None:
        """Take a pending message out of its stream; if it was the head, the next one is."""
        row = db.execute(
            "SELECT tenant, channel_id, ticket_id, head FROM messages"
            " WHERE message_id = ? AND state = 'pending'",
            (message_id,),
        ).fetchone()
        if row is None:
            return
        tenant, channel_id, ticket_id, head = row
        if error is None:
            db.execute("UPDATE messages SET state = ?, head = 0 WHERE message_id = ?", (state, message_id))
        else:
            db.execute(
                "UPDATE messages SET state = ?, head = 0, attempts = attempts + 1, last_error = ?"
                " WHERE message_id = ?",
                (state, error, message_id),
            )
        if head:
            db.execute(_PROMOTE, (tenant, channel_id, ticket_id))

    def get(self, message_id: str) -> OutboxMessage | None:
        with self._connect() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE message_id = ?", (message_id,)
            ).fetchone()
        return _message(row) if row else None

    def listing(self, state: MessageState, limit: int = 100) -> list[OutboxMessage]:
        """Oldest first: by ``created_at``, then put order."""
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE state = ? ORDER BY created_at, seq LIMIT ?",
                (state, max(limit, 0)),
            ).fetchall()
        return [_message(r) for r in rows]

    def replay(self, message_id: str, now: float) -> bool:
        """The message is put again (a new ``seq``: the end of its stream), due at ``now``;
        its attempts start again from 0 (its last error is kept)."""
        with self._transaction() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE message_id = ? AND state = 'dead'", (message_id,)
            ).fetchone()
            if row is None:
                return False
            m = _message(row)
            db.execute("DELETE FROM messages WHERE message_id = ?", (message_id,))
            db.execute(
                _INSERT,
                (
                    m.message_id, m.tenant, m.channel_id, m.channel_kind, m.kind, m.ticket_id,
                    m.url, m.body, json.dumps(m.headers), m.created_at, now, 0,
                    m.last_error, "pending", "pending", m.tenant, m.channel_id, m.ticket_id,
                ),
            )  # fmt: skip
        return True

    def counts(self) -> dict[MessageState, int]:
        found: dict[MessageState, int] = dict.fromkeys(_STATES, 0)
        with self._connect() as db:
            for state, n in db.execute("SELECT state, COUNT(*) FROM messages GROUP BY state"):
                if state in found:
                    found[state] = int(n)
        return found

    def purge(self, sent_before: float) -> int:
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM messages WHERE state = 'sent' AND created_at < ?", (sent_before,)
            )
            return int(cursor.rowcount)

    def close(self) -> None:
        """Nothing to release: each call opens and closes its own connection."""


def _message(row: Sequence[object]) -> OutboxMessage:
    (
        message_id, tenant, channel_id, channel_kind, kind, ticket_id, url, body, headers,
        created_at, next_at, attempts, last_error, state,
    ) = row  # fmt: skip
    return OutboxMessage.model_validate(
        {
            "message_id": message_id,
            "tenant": tenant,
            "channel_id": channel_id,
            "channel_kind": channel_kind,
            "kind": kind,
            "ticket_id": ticket_id,
            "url": url,
            "body": body,
            "headers": json.loads(str(headers)),
            "created_at": created_at,
            "next_at": next_at,
            "attempts": attempts,
            "last_error": last_error,
            "state": state,
        }
    )

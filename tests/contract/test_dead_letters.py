"""One contract for every DeadLetterQueue: SQLite (local) and SQS (moto's server + Redis)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from incident_responder.backends.dead_letters.sqlite import SqliteDeadLetters
from incident_responder.backends.dead_letters.sqs import SqsDeadLetters
from incident_responder.models import IncidentReport
from incident_responder.ports import DeadLetterQueue
from tests.s3_servers import S3Server

Factory = Callable[[], DeadLetterQueue]


@pytest.fixture(params=["sqlite", "sqs-moto"])
def make_queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """A factory: each call opens the SAME queue again, as a restarted process would."""
    if request.param == "sqlite":
        yield lambda: SqliteDeadLetters(tmp_path / "dlq.sqlite3")
        return
    moto: S3Server = request.getfixturevalue("moto_s3")
    import boto3

    sqs = boto3.session.Session().client(
        "sqs", endpoint_url=moto.endpoint_url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    url = sqs.create_queue(QueueName=f"ir-dlq-{uuid.uuid4().hex[:10]}")["QueueUrl"]
    index = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    prefix = f"ir:test-dlq:{uuid.uuid4().hex[:8]}:"
    yield lambda: SqsDeadLetters(client=sqs, queue_url=url, index=index, visibility_timeout=30, prefix=prefix)
    index.close()
    sqs.close()


def _report(n: int) -> IncidentReport:
    return IncidentReport(service="api", log=f"failure {n}")


def test_put_get_replay_done(make_queue: Factory) -> None:
    queue = make_queue()
    assert queue.depth() == 0 and queue.pending() == []
    queue.put("acme", "inc_1", _report(1), "index down")
    queue.put("acme", "inc_2", _report(2), "index down")
    queue.put("globex", "inc_3", _report(3), "index down")
    assert queue.depth() == 3
    got = queue.get("acme", "inc_1")
    assert got is not None and got.report == _report(1) and got.last_error == "index down"
    assert queue.get("globex", "inc_1") is None  # scoped by tenant

    reopened = make_queue()  # durable: another process sees them
    letters = reopened.pending()
    assert [(x.tenant, x.incident_id) for x in letters] == [
        ("acme", "inc_1"),
        ("acme", "inc_2"),
        ("globex", "inc_3"),
    ]
    for letter in letters:
        reopened.mark_done(letter.incident_id)
    assert reopened.depth() == 0 and reopened.pending() == []
    assert reopened.get("acme", "inc_1") is None or reopened.get("acme", "inc_1").done  # type: ignore[union-attr]


def test_failed_replay_keeps_the_letter(make_queue: Factory) -> None:
    queue = make_queue()
    queue.put("acme", "inc_9", _report(9), "store down")
    (letter,) = queue.pending()
    queue.mark_failed(letter.incident_id, "still down")
    again = queue.pending()
    assert [x.incident_id for x in again] == ["inc_9"] and again[0].attempts >= 1
    queue.mark_done("inc_9")
    assert queue.depth() == 0

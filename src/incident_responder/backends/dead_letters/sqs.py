"""The dead-letter queue on Amazon SQS (any SQS-compatible endpoint), shared by replicas.

SQS keeps the letters durably (``SendMessage`` returns once they are stored) and any
replica may replay them: a received letter is invisible to the others for
``visibility_timeout`` seconds and is deleted once applied. SQS cannot look a message
up by id, so ``GET /v1/incidents/{id}`` of a queued report is answered from a small
record per letter in Redis (which a multi-replica deployment has anyway).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any

import redis
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]
from redis.exceptions import RedisError

from incident_responder.errors import BackendUnavailable, ConfigError
from incident_responder.models import DeadLetter, IncidentReport

_RETENTION = 14 * 24 * 3600  # SQS's longest message retention


class SqsDeadLetters:
    """The :class:`~incident_responder.ports.DeadLetterQueue` on an SQS queue, shared by replicas;
    a record per letter in Redis answers lookups by incident id."""

    def __init__(
        self,
        *,
        client: Any,
        queue_url: str,
        index: redis.Redis,
        visibility_timeout: int = 60,
        prefix: str = "ir:dlq:",
    ) -> None:
        if not queue_url:
            raise ConfigError("the SQS dead-letter queue needs its queue URL")
        self._sqs = client
        self._queue_url = queue_url
        self._index = index
        self._visibility = visibility_timeout
        self._prefix = prefix
        self._held: dict[str, tuple[str, str]] = {}  # incident id -> (receipt handle, tenant) we hold
        self._lock = threading.Lock()

    def _key(self, tenant: str, incident_id: str) -> str:
        return f"{self._prefix}{tenant}:{incident_id}"

    def _call(self, what: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._sqs, what)(QueueUrl=self._queue_url, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise BackendUnavailable(f"sqs {what} failed: {type(exc).__name__}") from exc

    def put(self, tenant: str, incident_id: str, report: IncidentReport, error: str) -> None:
        letter = DeadLetter(
            incident_id=incident_id,
            tenant=tenant,
            report=report,
            enqueued_at=time.time(),
            last_error=error[:500],
        )
        body = letter.model_dump_json()
        self._call("send_message", MessageBody=body)
        # The letter is safe in SQS already; without Redis only its "queued" lookup is missing.
        with contextlib.suppress(RedisError):
            self._index.set(self._key(tenant, incident_id), body, ex=_RETENTION)

    def get(self, tenant: str, incident_id: str) -> DeadLetter | None:
        try:
            raw: Any = self._index.get(self._key(tenant, incident_id))
        except RedisError as exc:
            raise BackendUnavailable(f"dead-letter lookup failed: {type(exc).__name__}") from exc
        return None if raw is None else DeadLetter.model_validate_json(raw)

    def pending(self, limit: int = 100) -> list[DeadLetter]:
        letters: list[DeadLetter] = []
        while len(letters) < limit:
            answer = self._call(
                "receive_message",
                MaxNumberOfMessages=min(10, limit - len(letters)),
                VisibilityTimeout=self._visibility,
                WaitTimeSeconds=0,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
            messages = answer.get("Messages", [])
            if not messages:
                break
            for message in messages:
                data = json.loads(message["Body"])
                data["attempts"] = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1")) - 1
                letter = DeadLetter.model_validate(data)
                with self._lock:
                    self._held[letter.incident_id] = (message["ReceiptHandle"], letter.tenant)
                letters.append(letter)
        return sorted(letters, key=lambda letter: letter.enqueued_at)

    def _release(self, incident_id: str) -> tuple[str, str] | None:
        with self._lock:
            return self._held.pop(incident_id, None)

    def mark_done(self, incident_id: str) -> None:
        held = self._release(incident_id)
        if held is None:
            return
        receipt, tenant = held
        self._call("delete_message", ReceiptHandle=receipt)
        with contextlib.suppress(RedisError):  # else it expires with the retention period
            self._index.delete(self._key(tenant, incident_id))

    def mark_failed(self, incident_id: str, error: str) -> None:
        held = self._release(incident_id)
        if held is not None:  # visible again at once, for the next replay round
            self._call("change_message_visibility", ReceiptHandle=held[0], VisibilityTimeout=0)

    def depth(self) -> int:
        attributes = self._call(
            "get_queue_attributes",
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        ).get("Attributes", {})
        return int(attributes.get("ApproximateNumberOfMessages", 0)) + int(
            attributes.get("ApproximateNumberOfMessagesNotVisible", 0)
        )

"""Loopback receivers for notification delivery: real HTTP servers on 127.0.0.1 that check
what the real receiver checks and answer what it answers.

- ``SlackReceiver``: an incoming webhook (``POST /services/...``). JSON with ``text`` and
  ``blocks``, at most 50 blocks, a header's plain_text at most 150 characters, section text at
  most 3000, at most 10 fields of at most 2000, a context block at most 10 elements. Answers
  ``200 ok`` or ``400 invalid_blocks`` / ``invalid_payload`` / ``no_text`` as Slack does.
- ``PagerDutyReceiver``: the Events API v2 (``POST /v2/enqueue``). ``routing_key``,
  ``event_action`` (trigger, acknowledge, resolve) and ``dedup_key`` (at most 255) present; a
  trigger needs ``payload.summary`` (at most 1024), ``source`` and an allowed ``severity``.
  Answers ``202 {"status":"success",...}`` or ``400 {"status":"invalid event",...}``.
- ``WebhookReceiver``: a Standard Webhooks consumer; the official ``standardwebhooks`` package
  verifies the signature and refuses a timestamp more than 5 minutes off (``401``), else
  ``204``.

Each records every attempt (``attempts``: headers, raw body, parsed JSON, answer status) and
each accepted message (``accepted``). ``fail_first=N`` answers the first N attempts ``500``
(``429`` with ``Retry-After`` when ``throttle=True``) before judging anything.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Self

from standardwebhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Attempt:
    """One request as it arrived and what the receiver answered."""

    path: str
    headers: dict[str, str]  # lower-cased names
    raw: bytes
    body: Any  # the parsed JSON, None if the body was not JSON
    status: int


@dataclass(frozen=True)
class Verdict:
    """What a receiver answers a request: status, body, and the message id if accepted."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    message_id: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


class Receiver:
    """A server on ``127.0.0.1:<free port>`` (``start``/``stop`` or ``with``); subclasses judge
    each request in ``judge``."""

    name: ClassVar[str] = "receiver"
    path: ClassVar[str] = "/"

    def __init__(self, *, fail_first: int = 0, throttle: bool = False, retry_after: int = 1) -> None:
        self.fail_first = fail_first
        self.throttle = throttle
        self.retry_after = retry_after
        self.attempts: list[Attempt] = []
        self.accepted: list[Attempt] = []
        self._accepted_ids: list[str | None] = []
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def url(self) -> str:
        """Where to post (the URL a channel of this kind would hold)."""
        return self.base_url + self.path

    def start(self) -> Self:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                verdict = receiver._answer(self.path, headers, raw)
                self.send_response(verdict.status)
                self.send_header("Content-Type", verdict.content_type)
                self.send_header("Content-Length", str(len(verdict.body)))
                for name, value in verdict.headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(verdict.body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name=self.name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def accepted_ids(self) -> list[str | None]:
        """The message id of each accepted message, in order, repeats included (delivery is at
        least once); None for a message that carries none."""
        with self._changed:
            return list(self._accepted_ids)

    def wait_for(self, n: int, timeout: float = 5.0) -> list[Attempt]:
        """Wait until at least ``n`` messages were accepted; the accepted attempts. Raises
        TimeoutError with what arrived if they do not come in time."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.accepted) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    statuses = [a.status for a in self.attempts]
                    raise TimeoutError(f"{self.name}: {len(self.accepted)}/{n} accepted, attempts {statuses}")
                self._changed.wait(left)
            return list(self.accepted)

    def judge(self, path: str, headers: dict[str, str], raw: bytes, body: Any) -> Verdict:
        raise NotImplementedError

    def _answer(self, path: str, headers: dict[str, str], raw: bytes) -> Verdict:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with self._changed:
            failing = len(self.attempts) < self.fail_first
        try:
            verdict = self._failure() if failing else self.judge(path, headers, raw, body)
        except (AttributeError, KeyError, TypeError) as exc:  # JSON of an unexpected shape
            verdict = Verdict(400, f"malformed: {exc!r}".encode())
        attempt = Attempt(path, headers, raw, body, verdict.status)
        with self._changed:
            self.attempts.append(attempt)
            if verdict.accepted:
                self.accepted.append(attempt)
                self._accepted_ids.append(verdict.message_id)
            self._changed.notify_all()
        return verdict

    def _failure(self) -> Verdict:
        if self.throttle:
            return Verdict(429, b"rate_limited", headers=(("Retry-After", str(self.retry_after)),))
        return Verdict(500, b"internal_error")


class SlackReceiver(Receiver):
    """A Slack incoming webhook. The message id is read from the context block's
    ``message <id>`` element (see ``SlackNotifier``)."""

    name = "slack-receiver"
    path = "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
    MAX_BLOCKS = 50
    HEADER_LIMIT = 150
    TEXT_LIMIT = 3000
    FIELD_LIMIT = 2000
    MAX_FIELDS = 10
    MAX_CONTEXT_ELEMENTS = 10

    def judge(self, path: str, headers: dict[str, str], raw: bytes, body: Any) -> Verdict:
        if not path.startswith("/services/"):
            return Verdict(404, b"no_service")
        if not isinstance(body, dict):
            return Verdict(400, b"invalid_payload")
        if not isinstance(body.get("text"), str) or not body["text"]:
            return Verdict(400, b"no_text")
        problem = self.block_problem(body.get("blocks"))
        if problem:
            return Verdict(400, b"invalid_blocks", headers=(("X-Problem", problem),))
        return Verdict(200, b"ok", message_id=self.message_id(body))

    @classmethod
    def block_problem(cls, blocks: Any) -> str | None:
        """Why Slack would refuse ``blocks``, or None."""
        if not isinstance(blocks, list) or not blocks:
            return "blocks must be a non-empty list"
        if len(blocks) > cls.MAX_BLOCKS:
            return f"{len(blocks)} blocks"
        for block in blocks:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "header":
                text = block.get("text") or {}
                if text.get("type") != "plain_text" or not 0 < len(text.get("text", "")) <= cls.HEADER_LIMIT:
                    return "header text"
            elif kind == "section":
                fields = block.get("fields") or []
                text = block.get("text")
                if not text and not fields:
                    return "section without text or fields"
                if text and not cls._text_ok(text, cls.TEXT_LIMIT):
                    return "section text"
                if len(fields) > cls.MAX_FIELDS or not all(cls._text_ok(f, cls.FIELD_LIMIT) for f in fields):
                    return "section fields"
            elif kind == "context":
                elements = block.get("elements") or []
                if not 0 < len(elements) <= cls.MAX_CONTEXT_ELEMENTS:
                    return "context elements"
                if not all(cls._text_ok(e, cls.TEXT_LIMIT) for e in elements):
                    return "context element text"
            elif kind not in ("divider", "actions", "image"):
                return f"unknown block type {kind!r}"
        return None

    @staticmethod
    def _text_ok(text: Any, limit: int) -> bool:
        return (
            isinstance(text, dict)
            and text.get("type") in ("plain_text", "mrkdwn")
            and isinstance(text.get("text"), str)
            and 0 < len(text["text"]) <= limit
        )

    @staticmethod
    def message_id(body: dict[str, Any]) -> str | None:
        for block in body.get("blocks", []):
            if block.get("type") != "context":
                continue
            for element in block.get("elements", []):
                text = str(element.get("text", ""))
                if text.startswith("message "):
                    escaped = text.removeprefix("message ")
                    return escaped.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
        return None


class PagerDutyReceiver(Receiver):
    """The PagerDuty Events API v2. The message id is ``payload.custom_details.message_id``
    (triggers only: a resolve carries just its dedup key, see ``accepted_events``)."""

    name = "pagerduty-receiver"
    path = "/v2/enqueue"
    ACTIONS = ("trigger", "acknowledge", "resolve")
    SEVERITIES = ("critical", "error", "warning", "info")

    def judge(self, path: str, headers: dict[str, str], raw: bytes, body: Any) -> Verdict:
        if path != self.path:
            return Verdict(404, b"Not Found")
        errors = self.errors(body)
        if errors:
            answer = {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
            return Verdict(400, json.dumps(answer).encode(), "application/json")
        answer = {"status": "success", "message": "Event processed", "dedup_key": body["dedup_key"]}
        details = (body.get("payload") or {}).get("custom_details") or {}
        message_id = details.get("message_id")
        return Verdict(
            202, json.dumps(answer).encode(), "application/json", str(message_id) if message_id else None
        )

    @classmethod
    def errors(cls, body: Any) -> list[str]:
        """Why PagerDuty would refuse ``body`` (empty: accepted)."""
        if not isinstance(body, dict):
            return ["Event object must be JSON"]
        errors = []
        if not isinstance(body.get("routing_key"), str) or not body["routing_key"]:
            errors.append("'routing_key' is missing or blank")
        if body.get("event_action") not in cls.ACTIONS:
            errors.append("'event_action' is invalid (must be one of: trigger, acknowledge, resolve)")
        dedup_key = body.get("dedup_key")
        if not isinstance(dedup_key, str) or not 0 < len(dedup_key) <= 255:
            errors.append("'dedup_key' is missing or longer than 255 characters")
        if body.get("event_action") == "trigger":
            payload = body.get("payload")
            if not isinstance(payload, dict):
                return [*errors, "'payload' is missing"]
            summary = payload.get("summary")
            if not isinstance(summary, str) or not 0 < len(summary) <= 1024:
                errors.append("'payload.summary' is missing or longer than 1024 characters")
            if not isinstance(payload.get("source"), str) or not payload["source"]:
                errors.append("'payload.source' is missing or blank")
            if payload.get("severity") not in cls.SEVERITIES:
                errors.append("'payload.severity' must be one of: critical, error, warning, info")
        return errors

    def accepted_events(self) -> list[tuple[str, str]]:
        """``(event_action, dedup_key)`` of each accepted event, in order."""
        with self._changed:
            return [(a.body["event_action"], a.body["dedup_key"]) for a in self.accepted]


class WebhookReceiver(Receiver):
    """A Standard Webhooks consumer verifying with ``secret`` (``whsec_<base64>``, or any other
    text used as its UTF-8 bytes, as ``WebhookNotifier`` does). The message id is the
    ``webhook-id`` header."""

    name = "webhook-receiver"
    path = "/hooks/incidents"

    def __init__(
        self, secret: str, *, fail_first: int = 0, throttle: bool = False, retry_after: int = 1
    ) -> None:
        super().__init__(fail_first=fail_first, throttle=throttle, retry_after=retry_after)
        self.verifier = Webhook(secret) if secret.startswith("whsec_") else Webhook(secret.encode())

    def judge(self, path: str, headers: dict[str, str], raw: bytes, body: Any) -> Verdict:
        if path != self.path:
            return Verdict(404, b"Not Found")
        try:
            self.verifier.verify(raw, headers, json_parse=False)
        except (WebhookVerificationError, ValueError) as exc:  # ValueError: a malformed header
            return Verdict(401, str(exc).encode())
        return Verdict(204, b"", message_id=headers["webhook-id"])

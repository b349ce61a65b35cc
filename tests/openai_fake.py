"""A real HTTP server on loopback speaking the OpenAI Chat Completions protocol, with scripted replies.

Only the wire is faked: the code under test talks to it through the official SDK over TCP.
``POST /v1/chat/completions`` pops the next scripted ``Reply`` (a 500 if none is left) and records
the request (headers and JSON body) so tests can inspect what was sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Any = None  # JSON-serialised unless it is bytes
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering


@dataclass(frozen=True)
class Recorded:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any

    @property
    def prompt(self) -> str:
        """Every message's content, joined."""
        return "\n".join(str(m.get("content", "")) for m in self.body.get("messages", []))


def completion(content: str | None, *, prompt_tokens: int = 100, completion_tokens: int = 20) -> Reply:
    """A 200 chat completion whose one choice says ``content``."""
    return Reply(
        body={
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "fake-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


def answer(summary: str, steps: list[tuple[str, str]], causes: list[dict[str, Any]] | None = None) -> Reply:
    """A completion whose content is the JSON answer the recommender asks for."""
    body = {
        "summary": summary,
        "likely_causes": causes or [],
        "steps": [{"action": a, "runbook_id": r} for a, r in steps],
    }
    return completion(json.dumps(body))


def error(status: int, message: str = "fake error", headers: dict[str, str] | None = None) -> Reply:
    kind = {429: "rate_limit_exceeded", 401: "invalid_api_key"}.get(status, "server_error")
    return Reply(
        status=status,
        body={"error": {"message": message, "type": kind, "param": None, "code": kind}},
        headers=headers or {},
    )


class FakeOpenAI:
    """Serve on ``127.0.0.1:<free port>`` until ``close``; ``base_url`` ends in ``/v1``."""

    def __init__(self) -> None:
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.requests: list[Recorded] = []
        self.otherwise: Reply | None = None  # the reply when none is scripted (None: a 500)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                headers = {k.lower(): v for k, v in self.headers.items()}
                with fake._lock:
                    fake.requests.append(Recorded(self.path, headers, body))
                    reply = (
                        fake._replies.popleft()
                        if fake._replies
                        else fake.otherwise or error(500, "no scripted reply")
                    )
                if self.path != "/v1/chat/completions":
                    reply = error(404, f"unknown path {self.path}")
                if reply.delay and fake._stopping.wait(reply.delay):
                    return
                data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-openai", daemon=True
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    def close(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve() -> Iterator[FakeOpenAI]:
    """Generator for a pytest fixture: one server, closed afterwards."""
    server = FakeOpenAI()
    try:
        yield server
    finally:
        server.close()

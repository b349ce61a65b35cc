"""How the HTTP server runs: uvicorn (uvloop + httptools) with connection hygiene.

uvicorn's httptools protocol has no limit on the size of a request's headers, no timeout
for receiving them, no timeout before a new connection's first byte, and no cap on
connections per client (``limit_concurrency`` answers 503 per request but keeps every
connection open). ``GuardedHttpToolsProtocol`` adds exactly those, on top of the same
parser; the request body's own timeout and size limits are the ``Gate``'s (per route).
Other servers were weighed: granian times out headers but has no idle or per-client
limits, hypercorn bounds header size but parses HTTP in pure Python (h11); either would
replace the server whose throughput bench/ measures.

What a reverse proxy in front should still add: TLS, limits per real client address (with
a proxy every connection comes from it: set ``IR_HTTP__MAX_CONNECTIONS_PER_CLIENT=0``), and
buffering of slow clients' bodies.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIServer

import uvicorn
from prometheus_client import CollectorRegistry, start_http_server
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from incident_responder.errors import (
    HeadersTooLarge,
    IncidentResponderError,
    RequestTimeout,
    TooManyConnections,
)
from incident_responder.settings import HttpSettings, Settings

# The end of a request's header block: CRLF CRLF (llhttp also takes bare LF line ends).
_HEADER_ENDS = (b"\r\n\r\n", b"\n\n")


@dataclass
class ConnectionGuard:
    """The connection limits of one server process, and its open connections per client."""

    header_bytes: int
    header_timeout: float
    max_connections: int
    max_connections_per_client: int
    per_client: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, http: HttpSettings) -> ConnectionGuard:
        return cls(
            header_bytes=http.header_bytes,
            header_timeout=http.header_timeout,
            max_connections=http.max_connections,
            max_connections_per_client=http.max_connections_per_client,
        )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header size limit (431), a header read timeout
    (408), an idle timeout before the first request, and connection caps (503)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        guard: ConnectionGuard,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._guard = guard
        self._client_key: str | None = None
        self._in_headers = True
        self._header_bytes = 0
        self._tail = b""  # the last bytes of the header block so far: a terminator may span two reads
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self._guard
        client = self.client[0] if self.client else "unknown"
        if len(self.connections) > guard.max_connections:
            self._refuse(TooManyConnections("the server has too many open connections; retry later"))
            return
        if guard.max_connections_per_client and guard.per_client[client] >= guard.max_connections_per_client:
            self._refuse(TooManyConnections("this address has too many open connections"))
            return
        guard.per_client[client] += 1
        self._client_key = client
        # uvicorn arms its keep-alive timer only after a response: a connection that never
        # sends a byte would otherwise stay open for good.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if self._client_key is not None:
            counts = self._guard.per_client
            counts[self._client_key] -= 1
            if counts[self._client_key] <= 0:
                del counts[self._client_key]
            self._client_key = None
        self._stop_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_headers and not self._count_header_bytes(data):
            return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._stop_header_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_headers, self._header_bytes, self._tail = True, 0, b""

    def _count_header_bytes(self, data: bytes) -> bool:
        """Count the header bytes in ``data``; False (and the connection refused) once they are
        over the limit. The first byte of a request starts its header timer."""
        if self._header_timer is None and data:
            self._header_timer = self.loop.call_later(self._guard.header_timeout, self._headers_late)
        seen = self._tail + data
        ends = [at + len(end) for end in _HEADER_ENDS if (at := seen.find(end)) >= 0]
        self._header_bytes += len(data) if not ends else max(0, min(ends) - len(self._tail))
        self._tail = seen[-3:]
        if self._header_bytes > self._guard.header_bytes:
            self._refuse(HeadersTooLarge(f"request headers exceed {self._guard.header_bytes} bytes"))
            return False
        return True

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._in_headers:
            limit = self._guard.header_timeout
            self._refuse(RequestTimeout(f"the request headers did not arrive within {limit:g} s"))

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _refuse(self, exc: IncidentResponderError) -> None:
        """Answer ``exc`` in the API's error shape and close the connection."""
        self._stop_header_timer()
        if self.transport.is_closing():
            return
        body = json.dumps(
            {"error": {"code": exc.code, "message": exc.message}}, separators=(",", ":")
        ).encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (exc.status, _REASONS[exc.status], len(body), body)
        )
        self.transport.close()


_REASONS = {
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How every server process runs: uvloop + httptools behind the connection guard, our own
    structured logs instead of uvicorn's access log, 30 s for in-flight requests after SIGTERM.
    The default keep-alive (75 s) outlasts the usual 60 s idle timeout of load balancers, so the
    server never closes a connection just as a client or proxy sends on it."""
    return {
        "loop": "uvloop",
        "http": functools.partial(GuardedHttpToolsProtocol, guard=ConnectionGuard.of(settings.http)),
        "log_level": "warning",
        "access_log": False,
        "timeout_graceful_shutdown": 30,
        "timeout_keep_alive": settings.http.keep_alive_timeout,
    }


def expose_metrics(settings: Settings, registry: CollectorRegistry) -> WSGIServer | None:
    """Serve ``registry`` on the separate metrics port, if one is configured (a daemon thread of
    prometheus-client's own server; /metrics on the API's port then answers 404)."""
    if settings.metrics.port is None:
        return None
    server, _ = start_http_server(settings.metrics.port, addr=settings.metrics.host, registry=registry)
    return server


def run(app: Any, settings: Settings, **options: Any) -> None:
    """Serve ``app`` (an ASGI app, or an import string with ``factory=True``) until stopped."""
    uvicorn.run(app, host=settings.host, port=settings.port, **uvicorn_options(settings), **options)

"""What is decided about a request before its body is read, and the reading of that body.

``Gate`` is a pure ASGI middleware in front of every route. From the headers alone it
authenticates the caller (``X-API-Key`` or ``Authorization: Bearer``), refuses a client
address that failed authentication too often, and counts the request against its key's and
its tenant's budgets. Only then does it read the body: within the route's size limit
(``RoutePolicy.max_body``; 413 as soon as the declared or streamed size is over it, for
chunked bodies too), within ``body_timeout`` seconds (408), and for a batch while counting
its items as they stream in, so that an over-count batch is refused before it is ever
materialized. A batch then costs its number of items in the rate limits.

The routes get the body already read and the tenant in ``scope["state"]["tenant"]``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass

import anyio.to_thread
import ijson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from incident_responder.api.auth import KeyRing
from incident_responder.api.errors import retry_after
from incident_responder.api.ratelimit import RequestLimiter
from incident_responder.errors import (
    IncidentResponderError,
    InvalidInput,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    SourceThrottled,
    Unauthorized,
)

DEFAULT_TENANT = "default"
# Routes anyone may call (operations and the API description); everything under /v1 needs a key.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc"})


@dataclass(frozen=True)
class RoutePolicy:
    """How a request to one route is read."""

    max_body: int  # bytes
    authenticated: bool = True
    items: str | None = None  # ijson prefix of the array whose elements are counted ("incidents.item")
    max_items: int = 0
    source: bool = False  # an alert source: over a rate limit it is told 503 (it retries 5xx only)


@dataclass(frozen=True)
class RoutePolicies:
    """The policy of every route, from its method and path."""

    body: int  # most requests: one incident, a comment, a resolution
    batch: int  # POST /v1/incidents/batch
    runbook: int  # PUT /v1/runbooks/{id}
    max_batch: int
    max_alerts: int = 5_000  # alerts in one notification of an alert source

    def lookup(self, method: str, path: str) -> RoutePolicy:
        if path in PUBLIC_PATHS or not path.startswith("/v1/"):
            return RoutePolicy(max_body=self.body, authenticated=False)
        if method == "POST" and path == "/v1/incidents/batch":
            return RoutePolicy(max_body=self.batch, items="incidents.item", max_items=self.max_batch)
        if method == "POST" and path.startswith("/v1/alerts/"):
            return RoutePolicy(
                max_body=self.batch, items="alerts.item", max_items=self.max_alerts, source=True
            )
        if method == "PUT" and path.startswith("/v1/runbooks/"):
            return RoutePolicy(max_body=self.runbook)
        return RoutePolicy(max_body=self.body)


class Gate:
    """Pure ASGI middleware in front of every route: authenticates and rate-limits a request from
    its headers, then reads its body within the route's policy (see the module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keyring: KeyRing,
        limiter: RequestLimiter,
        policies: RoutePolicies,
        body_timeout: float,
        on_rate_limited: Callable[[], None] = lambda: None,
    ) -> None:
        self.app = app
        self._keyring = keyring
        self._limiter = limiter
        self._policies = policies
        self._body_timeout = body_timeout
        self._on_rate_limited = on_rate_limited

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self._policies.lookup(scope["method"], scope["path"])
        headers = dict(scope.get("headers") or [])
        try:
            key = tenant = None
            if policy.authenticated:
                tenant, key = await self._authenticate(scope, headers, policy)
                scope.setdefault("state", {})["tenant"] = tenant
            declared = headers.get(b"content-length", b"")
            if declared.isdigit() and int(declared) > policy.max_body:
                raise PayloadTooLarge(f"request body exceeds {policy.max_body} bytes")
            body, items = await self._read(receive, policy)
            if policy.items is not None and tenant is not None:  # it costs what it holds
                await self._budget(policy, self._limiter.check, tenant, key, max(items, 1))
        except IncidentResponderError as exc:
            if isinstance(exc, RateLimited):
                self._on_rate_limited()
            await _refuse(send, exc)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _authenticate(
        self, scope: Scope, headers: dict[bytes, bytes], policy: RoutePolicy
    ) -> tuple[str, str | None]:
        """The caller's tenant and key; the request is counted against their budgets unless it is
        counted by its items once its body is read (then it is only checked to fit one more)."""
        if not self._keyring.enabled:
            return DEFAULT_TENANT, None
        address = (scope.get("client") or ("unknown", 0))[0]
        await self._limit(self._limiter.check_address, address)
        key = _presented_key(headers)
        try:
            tenant = self._keyring.tenant_for(key)
        except Unauthorized:
            await self._limit(self._limiter.failed_auth, address)
            raise
        counted = policy.items is not None
        await self._budget(policy, self._limiter.allows if counted else self._limiter.check, tenant, key)
        return tenant, key

    async def _budget(self, policy: RoutePolicy, check: Callable[..., None], *args: object) -> None:
        """A key's or tenant's budget: over it, an alert source is told 503 (it retries those)."""
        try:
            await self._limit(check, *args)
        except RateLimited as exc:
            if policy.source:
                raise SourceThrottled(exc.message, retry_after=exc.retry_after) from None
            raise

    async def _limit(self, check: Callable[..., None], *args: object) -> None:
        if self._limiter.blocking:
            await anyio.to_thread.run_sync(check, *args)
        else:
            check(*args)

    async def _read(self, receive: Receive, policy: RoutePolicy) -> tuple[bytes, int]:
        """The whole body and the number of counted items in it (see ``RoutePolicy.items``)."""
        chunks: list[bytes] = []
        size = 0
        counter = _ItemCounter(policy.items) if policy.items else None
        try:
            async with asyncio.timeout(self._body_timeout):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        break  # the client went away; the app will see it too
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > policy.max_body:
                        raise PayloadTooLarge(f"request body exceeds {policy.max_body} bytes")
                    if chunk:
                        chunks.append(chunk)
                        if counter is not None and counter.feed(chunk) > policy.max_items:
                            field = (policy.items or "").split(".", 1)[0]
                            raise InvalidInput(f"{field}: at most {policy.max_items} per request")
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise RequestTimeout(f"the request body did not arrive within {self._body_timeout:g} s") from None
        return b"".join(chunks), counter.count if counter is not None else 0


class _ItemCounter:
    """Counts the elements of one JSON array while the document streams in (ijson's C parser);
    stops counting, without failing, at the first syntax error: the route then refuses the body."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._events = ijson.sendable_list()
        self._parser = ijson.parse_coro(self._events)
        self._broken = False
        self.count = 0

    def feed(self, chunk: bytes) -> int:
        if self._broken:
            return self.count
        try:
            self._parser.send(chunk)
        except (ijson.JSONError, ijson.IncompleteJSONError, RecursionError, ValueError):
            self._broken = True
        for prefix, event, _ in self._events:
            if prefix == self._prefix and event not in ("end_map", "end_array", "map_key"):
                self.count += 1
        del self._events[:]
        return self.count


def _presented_key(headers: dict[bytes, bytes]) -> str | None:
    key = headers.get(b"x-api-key")
    if key is None:
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            key = token.strip()
    return None if key is None else key.decode("latin-1")


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then the client's next events."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _refuse(send: Send, exc: IncidentResponderError) -> None:
    body = json.dumps({"error": {"code": exc.code, "message": exc.message}}, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    wait = retry_after(exc)
    if wait:
        headers.append((b"retry-after", str(wait).encode()))
    if isinstance(exc, PayloadTooLarge | RequestTimeout):
        headers.append((b"connection", b"close"))  # the rest of the body is not read
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

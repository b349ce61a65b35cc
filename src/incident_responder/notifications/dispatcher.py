"""The dispatcher: delivers outbox messages, at least once, each under its stable id.

A message is claimed (leased) from the outbox, posted byte for byte as rendered (a webhook's
signature computed at each attempt, over the same body and id), and then marked sent, or
retried after an exponential backoff with jitter (``Retry-After`` respected), or given
up into the dead list once its retries have spanned ``give_up_after`` seconds (at once for an
answer that no retry can change: 4xx other than 408/429). Each destination host has a circuit
breaker (the reliability layer's): while it is open, messages to that host are not sent; they
wait another backoff without spending an attempt. Redirects are never followed and every
delivery re-checks that its target is allowed (see :mod:`~incident_responder.notifications.targets`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx
import structlog

from incident_responder.errors import BackendUnavailable, IncidentResponderError, NotFound
from incident_responder.notifications.channels import ChannelBook
from incident_responder.notifications.model import Channel, ChannelKind, OutboxMessage
from incident_responder.observability.metrics import Metrics
from incident_responder.pipeline.stages import StageRunner
from incident_responder.ports import Notifier, Outbox
from incident_responder.reliability.breaker import CircuitBreaker, CircuitOpen

log = structlog.get_logger(__name__)
_RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})
_ERROR_BODY = 200  # characters of a refusal's body kept as the message's last error


@dataclass(frozen=True)
class Backoff:
    """Retry delays: ``min(cap, base * 2**attempt)``, the upper half of it at random; give up
    once the delays scheduled so far are expected to span ``give_up_after`` seconds."""

    base: float = 1.0
    cap: float = 300.0
    give_up_after: float = 86_400.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before attempt ``attempt + 1`` (``attempt`` failed ones so far, from 1)."""
        ceiling = min(self.cap, self.base * 2 ** min(attempt - 1, 30))
        wait = random.uniform(ceiling / 2, ceiling)  # "equal jitter": replicas drift apart
        return max(wait, min(retry_after or 0.0, self.cap))

    def exhausted(self, attempts: int) -> bool:
        """Whether ``attempts`` failed attempts have used up the retry time (expected delays)."""
        spent = sum(min(self.cap, self.base * 2.0 ** min(n, 30)) * 0.75 for n in range(attempts))
        return spent >= self.give_up_after


class Dispatcher:
    """Delivers due outbox messages over HTTP, ``concurrency`` at a time."""

    def __init__(
        self,
        *,
        outbox: Outbox,
        channels: ChannelBook,
        notifier_for: Callable[[ChannelKind], Notifier],
        client: httpx.AsyncClient,
        stages: StageRunner,
        metrics: Metrics,
        backoff: Backoff,
        timeout: float = 10.0,
        concurrency: int = 8,
        check_targets: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._outbox = outbox
        self._channels = channels
        self._notifier_for = notifier_for
        self._client = client
        self._stages = stages
        self._metrics = metrics
        self._backoff = backoff
        self._timeout = timeout
        self._concurrency = concurrency
        self._check_targets = check_targets
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    @property
    def lease(self) -> float:
        """How long a claimed message is kept from other dispatchers: its attempt's time, and then some."""
        return self._timeout + 30.0

    async def run_once(self) -> int:
        """Deliver the messages due now (one claim's worth); how many were attempted."""
        now = self._clock()
        claimed = await self._stages.run(
            "outbox", lambda: self._outbox.claim(now, self._concurrency * 4, self.lease)
        )
        if not claimed:
            return 0
        gate = asyncio.Semaphore(self._concurrency)

        async def one(message: OutboxMessage) -> None:
            async with gate:
                await self.deliver(message)

        await asyncio.gather(*(one(m) for m in claimed))
        return len(claimed)

    async def deliver(self, message: OutboxMessage) -> None:
        """One attempt at ``message``; the outbox records how it went."""
        kind = message.channel_kind
        try:
            channel = await self._stages.run(
                "outbox", lambda: self._channels.get(message.tenant, message.channel_id)
            )
        except NotFound:
            await self._bury(message, "its channel was deleted")
            return
        breaker = self._breaker(message.url)
        try:
            trial = breaker.admit()
        except CircuitOpen as exc:  # the host is failing: wait for it without spending an attempt
            error = message.last_error or exc.message
            at = self._clock() + self._backoff.delay(max(message.attempts, 1))
            await self._stages.run(
                "outbox", lambda: self._outbox.retry(message.message_id, at, error, counted=False)
            )
            return
        try:
            response = await self._post(channel, message)
        except (IncidentResponderError, ValueError, httpx.InvalidURL) as exc:
            # the target is not allowed (any more), or the message cannot be signed or sent
            breaker.succeeded(trial)
            self._metrics.notifications.labels(kind, "refused").inc()
            await self._bury(message, getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}")
            return
        except httpx.HTTPError as exc:
            breaker.failed(trial, BackendUnavailable(type(exc).__name__))
            await self._retry(message, f"{type(exc).__name__}: {exc}"[:_ERROR_BODY], None)
            return
        if response.is_success:
            breaker.succeeded(trial)
            await self._stages.run("outbox", lambda: self._outbox.sent(message.message_id))
            self._metrics.notifications.labels(kind, "sent").inc()
            self._metrics.notification_latency.labels(kind).observe(
                max(0.0, self._clock() - message.created_at)
            )
            log.info("notify.sent", channel=message.channel_id, kind=kind, message_id=message.message_id)
            return
        error = f"HTTP {response.status_code}: {response.text[:_ERROR_BODY]}"
        if response.status_code in _RETRYABLE:
            if response.status_code >= 500:
                breaker.failed(trial, BackendUnavailable(error))
            else:
                breaker.succeeded(trial)
            await self._retry(message, error, _retry_after(response))
            return
        breaker.succeeded(trial)
        await self._bury(message, error)  # refused for good: retrying sends the same bytes again

    async def _post(self, channel: Channel, message: OutboxMessage) -> httpx.Response:
        """One HTTP attempt: ``InvalidInput`` if the target is not allowed, httpx's errors as raised."""
        if self._check_targets:
            await self._stages.run("outbox", lambda: self._channels.check_target(message.url))
        signed = self._notifier_for(channel.kind).sign(
            channel, message.message_id, message.body, int(self._clock())
        )
        return await self._client.post(
            message.url,
            content=message.body.encode("utf-8"),
            headers={**message.headers, **signed},
            timeout=self._timeout,
        )

    async def try_once(self, channel: Channel, message: OutboxMessage) -> tuple[int | None, str]:
        """Send ``message`` once, outside the outbox (a channel's test): the answer's status and
        an error text ("" when delivered)."""
        try:
            response = await self._post(channel, message)
        except IncidentResponderError as exc:
            return None, exc.message
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            return None, f"{type(exc).__name__}: {exc}"[:_ERROR_BODY]
        self._metrics.notifications.labels(channel.kind, "test").inc()
        if response.is_success:
            return response.status_code, ""
        return response.status_code, f"HTTP {response.status_code}: {response.text[:_ERROR_BODY]}"

    async def _retry(self, message: OutboxMessage, error: str, retry_after: float | None) -> None:
        attempts = message.attempts + 1
        if self._backoff.exhausted(attempts):
            await self._bury(message, error)
            return
        at = self._clock() + self._backoff.delay(attempts, retry_after)
        await self._stages.run("outbox", lambda: self._outbox.retry(message.message_id, at, error))
        self._metrics.notifications.labels(message.channel_kind, "retried").inc()
        log.warning("notify.retry", channel=message.channel_id, attempts=attempts, error=error)

    async def _bury(self, message: OutboxMessage, error: str) -> None:
        await self._stages.run("outbox", lambda: self._outbox.bury(message.message_id, error))
        self._metrics.notifications.labels(message.channel_kind, "dead").inc()
        log.error("notify.gave_up", channel=message.channel_id, message_id=message.message_id, error=error)

    def _breaker(self, url: str) -> CircuitBreaker:
        host = urlsplit(url).netloc
        breaker = self._breakers.get(host)
        if breaker is None:
            breaker = self._breakers[host] = CircuitBreaker(
                f"notify:{host}", fail_max=5, reset_timeout=min(30.0, max(1.0, self._backoff.cap))
            )
        return breaker


def _retry_after(response: httpx.Response) -> float | None:
    """A ``Retry-After`` header in seconds (either form), if any."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None

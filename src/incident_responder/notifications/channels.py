"""A tenant's notification channels, stored at ``<tenant>/channels/<channel_id>.json``.

Read through a short-lived per-tenant cache: the event pump reads every channel of a tenant
for each event, and a change reaches other replicas within ``ttl`` seconds (this process
sees its own at once). Secrets are stored as given (the service must use them) and never
shown back.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import time
from collections.abc import Callable

from incident_responder.errors import InvalidInput, LimitReached, NotFound
from incident_responder.models import utcnow
from incident_responder.notifications.model import PAGERDUTY_EVENTS_URL, Channel
from incident_responder.notifications.targets import check_target
from incident_responder.ports import ObjectStore

CHANNEL_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
MASK = "********"


def shown(channel: Channel) -> dict[str, object]:
    """A channel as the API shows it: its secret and routing key masked."""
    out = channel.model_dump(mode="json")
    for field in ("secret", "routing_key"):
        if out.get(field):
            out[field] = MASK
    return out


class ChannelBook:
    """Every channel of every tenant: saved, listed, deleted."""

    def __init__(
        self,
        objects: ObjectStore,
        *,
        allow_private: bool = False,
        max_per_tenant: int = 50,
        ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._objects = objects
        self._allow_private = allow_private
        self._max = max_per_tenant
        self._ttl = ttl
        self._clock = clock
        self._cached: dict[str, tuple[float, dict[str, Channel]]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(tenant: str, channel_id: str) -> str:
        return f"{tenant}/channels/{channel_id}.json"

    def all(self, tenant: str) -> dict[str, Channel]:
        """The tenant's channels by id (blocking on a cache miss)."""
        now = self._clock()
        with self._lock:
            hit = self._cached.get(tenant)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        found: dict[str, Channel] = {}
        for key in self._objects.list_keys(f"{tenant}/channels/", limit=self._max + 1):
            stored = self._objects.get(key)
            if stored is not None:
                channel = Channel.model_validate_json(stored.data)
                found[channel.channel_id] = channel
        with self._lock:
            self._cached[tenant] = (now, found)
        return found

    def get(self, tenant: str, channel_id: str) -> Channel:
        if not CHANNEL_ID.fullmatch(channel_id):
            raise NotFound(f"channel {channel_id} not found")
        channel = self.all(tenant).get(channel_id)
        if channel is None:
            raise NotFound(f"channel {channel_id} not found")
        return channel

    def put(self, tenant: str, channel: Channel) -> bool:
        """Save ``channel`` (checked for its kind, its URL a permitted target); True if it is new.
        A masked secret or routing key sent back as it was shown keeps the stored one."""
        if not CHANNEL_ID.fullmatch(channel.channel_id):
            raise InvalidInput("channel_id: 1-64 characters of [A-Za-z0-9._-], not starting with '.'")
        existing = self.all(tenant).get(channel.channel_id)
        if existing is None and len(self.all(tenant)) >= self._max:
            raise LimitReached(f"at most {self._max} channels per tenant")
        if existing is not None:
            if channel.secret == MASK:
                channel.secret = existing.secret
            if channel.routing_key == MASK:
                channel.routing_key = existing.routing_key
            channel.created_at = existing.created_at
        _check_kind(channel)
        check_target(channel.url, allow_private=self._allow_private)
        channel.updated_at = utcnow()
        self._objects.put(self._key(tenant, channel.channel_id), channel.model_dump_json().encode())
        self._forget(tenant)
        return existing is None

    def delete(self, tenant: str, channel_id: str) -> None:
        self.get(tenant, channel_id)
        self._objects.delete(self._key(tenant, channel_id))
        self._forget(tenant)

    def check_target(self, url: str) -> None:
        """Refuse ``url`` if it is not a target this service may post to (blocking)."""
        check_target(url, allow_private=self._allow_private)

    def _forget(self, tenant: str) -> None:
        with self._lock:
            self._cached.pop(tenant, None)


def _check_kind(channel: Channel) -> None:
    if channel.kind == "pagerduty":
        if not channel.routing_key or channel.routing_key == MASK:
            raise InvalidInput("routing_key: required for a pagerduty channel")
        channel.url = channel.url or PAGERDUTY_EVENTS_URL
    elif channel.routing_key:
        raise InvalidInput(f"routing_key: only for pagerduty channels, not {channel.kind}")
    if channel.kind != "webhook" and channel.secret:
        raise InvalidInput(f"secret: only for webhook channels, not {channel.kind}")
    if channel.secret == MASK:
        raise InvalidInput("secret: give the secret itself (the mask only keeps a stored one)")
    if channel.secret is not None:
        _check_secret(channel.secret)
    if not channel.url:
        raise InvalidInput("url: required")
    if not channel.events:
        raise InvalidInput("events: at least one")


def _check_secret(secret: str) -> None:
    """A Standard Webhooks secret ("whsec_" + base64 of the key) or any text of 8+ characters."""
    if secret.startswith("whsec_"):
        try:
            encoded = secret.removeprefix("whsec_")
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (ValueError, binascii.Error) as exc:
            raise InvalidInput("secret: 'whsec_' must be followed by base64") from exc
        if len(key) < 16:
            raise InvalidInput("secret: the key after 'whsec_' must be at least 16 bytes")
    elif not 8 <= len(secret) <= 500:
        raise InvalidInput("secret: 8-500 characters (or whsec_<base64>)")

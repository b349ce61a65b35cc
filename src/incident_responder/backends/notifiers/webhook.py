"""A generic webhook: the notice in the Standard Webhooks envelope, signed per attempt.

The body is ``{"type": "ticket.<kind>", "timestamp": <when the event happened>, "data":
<the notice>}``, the envelope the spec recommends. Each attempt carries ``webhook-id`` (the
message id, the same on every attempt: receivers dedupe on it), ``webhook-timestamp`` (the
attempt's unix seconds) and ``webhook-signature``: ``v1,`` then the base64 HMAC-SHA256 of
``{id}.{timestamp}.{body}`` (https://github.com/standard-webhooks/standard-webhooks).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json

from incident_responder.notifications.model import Channel, ChannelKind, Notice, Rendered

SECRET_PREFIX = "whsec_"


class WebhookNotifier:
    """Renders notices as Standard Webhooks messages to ``channel.url``."""

    @property
    def kind(self) -> ChannelKind:
        return "webhook"

    def render(self, channel: Channel, notice: Notice) -> Rendered:
        data = notice.model_dump(mode="json")
        body = {"type": f"ticket.{notice.kind}", "timestamp": data["at"], "data": data}
        return Rendered(
            url=channel.url,
            body=json.dumps(body, ensure_ascii=False, separators=(",", ":")),
            headers={"Content-Type": "application/json"},
        )

    def sign(self, channel: Channel, message_id: str, body: str, timestamp: int) -> dict[str, str]:
        """``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``; a channel without a
        secret gets the first two only (unsigned: the receiver cannot tell us from anyone).

        Raises ValueError for a message id containing "." (the signed content is
        dot-delimited, so such an id could shift bytes between id and timestamp) or a
        ``whsec_`` secret that is not base64."""
        if "." in message_id:
            raise ValueError(f"message id {message_id!r} contains '.'")
        headers = {"webhook-id": message_id, "webhook-timestamp": str(timestamp)}
        if channel.secret is None:
            return headers
        content = f"{message_id}.{timestamp}.{body}".encode()
        digest = hmac.new(signing_key(channel.secret), content, hashlib.sha256).digest()
        headers["webhook-signature"] = "v1," + base64.b64encode(digest).decode("ascii")
        return headers


def signing_key(secret: str) -> bytes:
    """The HMAC key of a channel secret: for ``whsec_<base64>`` (the spec's form) the decoded
    bytes, padding optional as in the reference libraries. A secret without the prefix is
    used as its UTF-8 bytes: the spec only defines the prefixed form, and an operator who
    typed a passphrase expects that passphrase to be the key (a receiver using the
    ``standardwebhooks`` library passes these same bytes to ``Webhook(bytes)``)."""
    if not secret.startswith(SECRET_PREFIX):
        key = secret.encode()
    else:
        encoded = secret[len(SECRET_PREFIX) :]
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except binascii.Error as exc:
            raise ValueError("webhook secret: not base64 after 'whsec_'") from exc
    if not key:
        raise ValueError("webhook secret is empty")
    return key

"""Grafana's optional webhook signature: hex HMAC-SHA256 of the body, or of
``"<timestamp>:<body>"`` when Grafana is set to send a timestamp header."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping

from incident_responder.errors import Unauthorized

MAX_SKEW = 300  # seconds a signed timestamp may be away from now (replays are refused past it)


def verify_grafana(
    body: bytes,
    headers: Mapping[str, str],
    *,
    secret: str,
    signature_header: str,
    timestamp_header: str = "",
    clock: Callable[[], float] = time.time,
) -> None:
    """Raise ``Unauthorized`` unless ``headers`` carry a valid signature of ``body``."""
    presented = headers.get(signature_header.lower(), "").strip().lower()
    if not presented:
        raise Unauthorized(f"missing {signature_header} header (a signature secret is configured)")
    signed = body
    if timestamp_header:
        stamp = headers.get(timestamp_header.lower(), "").strip()
        if not stamp.isdigit() or abs(clock() - int(stamp)) > MAX_SKEW:
            raise Unauthorized(f"missing or stale {timestamp_header} header")
        signed = stamp.encode() + b":" + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, presented):
        raise Unauthorized("the signature does not match the body")

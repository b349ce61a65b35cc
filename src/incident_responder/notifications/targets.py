"""Where the service may send a notification: a channel's URL is the tenant's to choose, and
the service posts to it, so a URL naming a loopback, private, link-local or otherwise
non-public address (the cloud metadata endpoint, an internal admin API) is refused unless the
operator allows private targets. Checked when a channel is saved and again before each
delivery (a name may resolve elsewhere later); redirects are never followed."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from incident_responder.errors import InvalidInput

MAX_URL = 2_000


def check_url(url: str) -> str:
    """The URL's host, if ``url`` is an absolute http(s) URL without credentials; else ``InvalidInput``."""
    if len(url) > MAX_URL:
        raise InvalidInput(f"url: at most {MAX_URL} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("url: must be an absolute http:// or https:// URL")
    if parts.username or parts.password:
        raise InvalidInput("url: must not carry credentials (use the channel's secret or routing key)")
    return parts.hostname


def check_target(url: str, *, allow_private: bool) -> None:
    """Refuse (``InvalidInput``) a URL whose host is not a public address (blocking: resolves it)."""
    host = check_url(url)
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise InvalidInput(f"url: cannot resolve {host!r}") from exc
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not address.is_global:
            raise InvalidInput(
                f"url: {host!r} resolves to a non-public address {address}; "
                "set IR_NOTIFICATIONS__ALLOW_PRIVATE_TARGETS=true to allow it"
            )

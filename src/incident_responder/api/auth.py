"""API keys -> tenants. Keys are held only as SHA-256 digests and compared in constant time.

Keys come from ``IR_API_KEYS`` (plain, hashed at start-up) and/or ``IR_API_KEYS_FILE``
(lines ``tenant:<sha256 hex of the key>``, ``#`` comments allowed). The file is
re-read whenever its modification time changes, so keys rotate without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import threading
from pathlib import Path

import structlog

from incident_responder.errors import ConfigError, Unauthorized

log = structlog.get_logger(__name__)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TENANT = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def parse_key_file(text: str) -> list[tuple[bytes, str]]:
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tenant, sep, hexdigest = line.partition(":")
        tenant, hexdigest = tenant.strip(), hexdigest.strip().lower()
        if not sep or not _TENANT.match(tenant) or not _HEX64.match(hexdigest):
            raise ConfigError(f"API key file line {number}: expected 'tenant:<64 hex chars of sha256(key)>'")
        entries.append((bytes.fromhex(hexdigest), tenant))
    return entries


class KeyRing:
    """Which tenant an API key belongs to: the keys given in plain and those of ``key_file``
    (re-read when it changes), all held as SHA-256 digests and compared in constant time."""

    def __init__(self, plain: dict[str, str], key_file: Path | None) -> None:
        self._static = [(digest(key), tenant) for key, tenant in plain.items()]
        self._file = key_file
        self._file_entries: list[tuple[bytes, str]] = []
        self._file_stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()
        if key_file is not None:
            self._reload(force=True)

    @property
    def enabled(self) -> bool:
        return bool(self._static) or self._file is not None

    def _reload(self, force: bool = False) -> None:
        assert self._file is not None
        try:
            st = os.stat(self._file)
        except OSError as exc:
            if force:
                raise ConfigError(f"cannot read API key file {self._file}: {exc.strerror}") from exc
            return  # keep the last good set while the file is being replaced
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._file_stamp:
            return
        try:
            entries = parse_key_file(self._file.read_text(encoding="utf-8"))
        except (OSError, ConfigError) as exc:
            if force:
                raise ConfigError(str(exc)) from exc
            log.error("auth.key_file_invalid", path=str(self._file), error=str(exc))
            return
        with self._lock:
            self._file_entries, self._file_stamp = entries, stamp
        if not force:
            log.info("auth.keys_reloaded", keys=len(entries))

    def tenant_for(self, presented: str | None) -> str:
        if not presented:
            raise Unauthorized("missing X-API-Key header")
        if self._file is not None:
            self._reload()
        wanted = digest(presented)
        tenant = None
        with self._lock:
            entries = self._static + self._file_entries
        # Every entry is compared, so timing does not reveal which one nearly matched.
        for stored, owner in entries:
            if hmac.compare_digest(wanted, stored):
                tenant = owner
        if tenant is None:
            raise Unauthorized("invalid API key")
        return tenant

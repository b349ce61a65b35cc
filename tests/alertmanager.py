"""A real Prometheus Alertmanager (Debian's ``prometheus-alertmanager``, 0.25) as a process, for the
tests that need one: write its config into a temp dir, start it on a free loopback port, wait for
``/-/ready``, post alerts through its v2 API and stop it (SIGTERM, then SIGKILL) on exit.

    with Alertmanager("http://127.0.0.1:8080/v1/alerts/alertmanager", bearer_token="t") as am:
        am.post_alerts([make_alert({"alertname": "DiskFull", "instance": "db-1"})])
        ...
        am.post_alerts([resolve(alert)])  # the same labels again, ``endsAt`` now

Tests call :func:`require_alertmanager` (or use the ``skip_without_alertmanager`` mark) so that
they are *skipped* with a clear reason where the binary is missing; ``.ci/run`` installs it.

What Alertmanager 0.25 accepts, and what it does with it (checked with the real binary):

* Durations are Prometheus durations: whole numbers with units ``ms s m h d w y`` ("250ms",
  "1s", "1m30s"); "0.5s" and negative values are rejected. A number given to this class is taken
  as seconds and written in whole milliseconds.
* ``group_wait`` may be ``0s``: a new group's first notification goes out at once.
* ``group_interval`` and ``repeat_interval`` must be > 0 ("cannot be zero"); ``1ms`` is the
  smallest accepted. Below ~100 ms it only burns CPU; 250 ms is the default here.
* Notifications are only ever sent on a group's ``group_interval`` tick. A repeat of an unchanged
  group goes out on the first tick at which ``repeat_interval`` has passed since the last
  *successful* delivery, so it arrives after roughly ``repeat_interval`` plus up to one
  ``group_interval`` (1s/1s gave 2s; 250ms/1s gives ~1.25s). A resolution, or a new alert in a
  group, goes out on the next tick.
* ``group_by: ["..."]`` groups by every label, i.e. no grouping (one alert per notification);
  "..." cannot be combined with other labels. ``group_by: []`` puts all alerts in one group.
* A webhook answered with 5xx is retried with back-off within the flush (for
  max(group_interval, 10s)); any other non-2xx (4xx, 429 included) is not retried within the
  flush, but since nothing was logged as delivered, the next tick tries again.
* The payload is ``version: "4"``; a firing alert's ``endsAt`` is ``0001-01-01T00:00:00Z``.
  Times are Go's RFC 3339 with trailing fractional zeros trimmed ("...:21.32Z" for a posted
  "...:21.320Z", "...:21Z" for a whole second; up to 9 digits from Prometheus): compare them
  parsed (``datetime.fromisoformat`` reads all of these), never as strings.
  ``GET /api/v2/alerts`` does not list resolved alerts.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx
import pytest
import yaml

# Debian's package installs it under this name; upstream's tarball calls it ``alertmanager``.
BINARY_NAMES = ("prometheus-alertmanager", "alertmanager")
DEBIAN_PATH = "/usr/bin/prometheus-alertmanager"
# Set to a binary's path to use that one instead of looking on PATH.
BINARY_ENV = "IR_ALERTMANAGER_BIN"
SKIP_REASON = (
    "Prometheus Alertmanager is not installed (Debian: apt-get install prometheus-alertmanager, "
    f"which .ci/run does; or set {BINARY_ENV}): the Alertmanager end-to-end tests were skipped"
)

DEFAULT_GROUP_WAIT = "0s"
DEFAULT_GROUP_INTERVAL = "250ms"
DEFAULT_REPEAT_INTERVAL = "1s"
READY_TIMEOUT = 15.0
RECEIVER_NAME = "incident-responder"
# A firing alert's endsAt in the webhook payload (Go's zero time).
ZERO_TIME = "0001-01-01T00:00:00Z"

_DURATION = re.compile(r"^((\d+)y)?((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?((\d+)ms)?$")


def duration(value: str | float, *, name: str = "duration", allow_zero: bool = True) -> str:
    """``value`` as an Alertmanager duration string; a number is seconds. Rejects what it would."""
    if isinstance(value, str):
        text = value.strip()
        if not text or not _DURATION.match(text):
            raise ValueError(f"{name}: {value!r} is not an Alertmanager duration (e.g. 250ms, 1s, 5m)")
        millis = _millis(text)
    else:
        if value < 0:
            raise ValueError(f"{name}: {value!r} is negative")
        millis = round(value * 1000)
        text = f"{millis}ms"
    if millis == 0 and not allow_zero:
        raise ValueError(f"{name} cannot be zero (Alertmanager refuses it; 1ms is the smallest)")
    return text


def _millis(text: str) -> int:
    units = {"y": 365 * 86_400_000, "w": 7 * 86_400_000, "d": 86_400_000, "h": 3_600_000,
             "m": 60_000, "s": 1000, "ms": 1}  # fmt: skip
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|[ywdhms])", text))


def seconds(value: str) -> float:
    """An Alertmanager duration string in seconds."""
    return _millis(duration(value)) / 1000


def timestamp(when: datetime | None = None) -> str:
    """RFC 3339 in UTC with milliseconds, as Alertmanager writes them (``...T10:17:25.412Z``)."""
    when = (when or datetime.now(UTC)).astimezone(UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_alert(
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
    *,
    starts_at: datetime | str | None = None,
    ends_at: datetime | str | None = None,
    generator_url: str | None = None,
) -> dict[str, Any]:
    """One alert for ``POST /api/v2/alerts``.

    ``startsAt`` defaults to now (sent explicitly, so a later resolve can repeat it); leave
    ``ends_at`` unset for a firing alert (Alertmanager then ends it after its resolve_timeout, 5m,
    unless it is posted again); an ``ends_at`` at or before now posts it resolved.
    """
    alert: dict[str, Any] = {"labels": dict(labels), "annotations": dict(annotations or {})}
    alert["startsAt"] = starts_at if isinstance(starts_at, str) else timestamp(starts_at)
    if ends_at is not None:
        alert["endsAt"] = ends_at if isinstance(ends_at, str) else timestamp(ends_at)
    if generator_url is not None:
        alert["generatorURL"] = generator_url
    return alert


def resolve(alert: Mapping[str, Any], at: datetime | None = None) -> dict[str, Any]:
    """``alert`` again with ``endsAt`` now (or ``at``): posting it resolves the alert."""
    return {**alert, "endsAt": timestamp(at)}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Alertmanager:
    """One Alertmanager process whose single route sends every alert to one webhook receiver."""

    def __init__(
        self,
        webhook_url: str,
        *,
        bearer_token: str | None = None,
        group_by: Sequence[str] = ("alertname",),
        group_wait: str | float = DEFAULT_GROUP_WAIT,
        group_interval: str | float = DEFAULT_GROUP_INTERVAL,
        repeat_interval: str | float = DEFAULT_REPEAT_INTERVAL,
        send_resolved: bool = True,
        max_alerts: int = 0,
        log_level: str = "info",
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        if "..." in group_by and len(group_by) > 1:
            raise ValueError('group_by: "..." (no grouping) cannot be combined with other labels')
        if max_alerts < 0:
            raise ValueError("max_alerts must be >= 0 (0: no limit)")
        self.webhook_url = webhook_url
        self.bearer_token = bearer_token
        self.group_by = list(group_by)
        self.group_wait = duration(group_wait, name="group_wait")
        self.group_interval = duration(group_interval, name="group_interval", allow_zero=False)
        self.repeat_interval = duration(repeat_interval, name="repeat_interval", allow_zero=False)
        self.send_resolved = send_resolved
        self.max_alerts = max_alerts
        self.log_level = log_level
        self.ready_timeout = ready_timeout
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_seconds = 0.0  # spawn to the first /-/ready 200
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._log: IO[bytes] | None = None
        self._client = httpx.Client(timeout=10)

    # --- the binary --------------------------------------------------------------------------

    @classmethod
    def binary(cls) -> str | None:
        """The Alertmanager binary's path, or None where it is not installed."""
        override = os.environ.get(BINARY_ENV)
        if override:
            return override if os.access(override, os.X_OK) else None
        for name in BINARY_NAMES:
            found = shutil.which(name)
            if found:
                return found
        return DEBIAN_PATH if os.access(DEBIAN_PATH, os.X_OK) else None  # /usr/bin off PATH

    @classmethod
    def available(cls) -> bool:
        return cls.binary() is not None

    @classmethod
    def version(cls) -> str | None:
        """``alertmanager, version 0.25.0 (...)``'s version number, or None."""
        binary = cls.binary()
        if binary is None:
            return None
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False)
        match = re.search(r"version (\S+)", out.stdout + out.stderr)
        return match.group(1) if match else None

    # --- configuration -----------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The configuration this instance runs with (written as YAML)."""
        webhook: dict[str, Any] = {
            "url": self.webhook_url,
            "send_resolved": self.send_resolved,
            "max_alerts": self.max_alerts,
        }
        if self.bearer_token is not None:
            webhook["http_config"] = {"authorization": {"type": "Bearer", "credentials": self.bearer_token}}
        return {
            "route": {
                "receiver": RECEIVER_NAME,
                "group_by": self.group_by,
                "group_wait": self.group_wait,
                "group_interval": self.group_interval,
                "repeat_interval": self.repeat_interval,
            },
            "receivers": [{"name": RECEIVER_NAME, "webhook_configs": [webhook]}],
        }

    @property
    def url(self) -> str:
        """Alertmanager's own base URL (also the webhook payload's ``externalURL``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def workdir(self) -> Path:
        assert self._dir is not None, "start first"
        return Path(self._dir.name)

    # --- the process -------------------------------------------------------------------------

    def start(self) -> Alertmanager:
        """Write the config, spawn the binary and wait for ``/-/ready``; RuntimeError with its log
        if it exits or is not ready within ``ready_timeout``."""
        binary = self.binary()
        if binary is None:
            raise RuntimeError(SKIP_REASON)
        assert self.proc is None, "already started"
        self._dir = tempfile.TemporaryDirectory(prefix="alertmanager-")
        (self.workdir / "alertmanager.yml").write_text(yaml.safe_dump(self.config(), sort_keys=False))
        for attempt in range(3):  # another process may take the free port before we bind it
            try:
                self._spawn(binary)
                return self
            except _PortTaken:
                if attempt == 2:
                    raise
        return self  # pragma: no cover - the loop returns or raises

    def _spawn(self, binary: str) -> None:
        self.port = free_port()
        self._log = open(self.workdir / "alertmanager.log", "wb")  # noqa: SIM115 - closed by stop()
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={self.workdir / 'alertmanager.yml'}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--web.external-url={self.url}",
                "--cluster.listen-address=",  # empty: no HA cluster (and no port 9094)
                f"--log.level={self.log_level}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        deadline = started + self.ready_timeout
        while True:
            try:
                if self._client.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    self.ready_seconds = time.perf_counter() - started
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.perf_counter() > deadline:
                exited = self.proc.poll()
                self.stop()
                log = self.log()
                if exited is not None and "address already in use" in log:
                    raise _PortTaken(log)
                state = (
                    f"exited with {exited}" if exited is not None else f"not ready in {self.ready_timeout}s"
                )
                raise RuntimeError(f"Alertmanager {state}; its log:\n{log[-4000:]}")
            time.sleep(0.02)

    def log(self) -> str:
        """What the process has written (stdout and stderr) so far."""
        if self._dir is None:
            return ""
        path = self.workdir / "alertmanager.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, wait ``timeout`` s, then SIGKILL; keeps the work dir until ``close``."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        """Stop the process and remove its work dir."""
        self.stop()
        self._client.close()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> Alertmanager:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- the v2 API --------------------------------------------------------------------------

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """``POST /api/v2/alerts`` (see :func:`make_alert`, :func:`resolve`); raises unless 200."""
        response = self._client.post(f"{self.url}/api/v2/alerts", json=list(alerts))
        if response.status_code != 200:
            raise RuntimeError(f"POST /api/v2/alerts: {response.status_code} {response.text}")

    def alerts(self, *matchers: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` (active ones; resolved are not listed), optionally filtered by
        matchers such as ``'alertname="DiskFull"'``."""
        response = self._client.get(f"{self.url}/api/v2/alerts", params={"filter": list(matchers)})
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result


class _PortTaken(RuntimeError):
    pass


def require_alertmanager() -> str:
    """The binary's path; skips the calling test (with the reason) where it is missing."""
    binary = Alertmanager.binary()
    if binary is None:
        pytest.skip(SKIP_REASON)
    return binary


skip_without_alertmanager = pytest.mark.skipif(not Alertmanager.available(), reason=SKIP_REASON)

"""The webhook bodies of the alert sources, read leniently: fields we do not use are ignored,
and a value of an unexpected scalar type is kept as text, so that a well-formed notification
is never refused for a detail (Alertmanager drops a notification answered with a 4xx)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

# Alertmanager and Grafana send this for "no end yet".
_ZERO_TIME_YEAR = 1


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value).lower() if isinstance(value, bool) else str(value)
    raise ValueError("must be a string")


def _text_map(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("must be an object of strings")
    return {str(k): _text(v) for k, v in value.items()}


def _time(value: Any) -> datetime | None:
    """An RFC 3339 time, or None for no time (absent, empty, unreadable or year 1)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None  # a detail: the notification still counts, as of now
    if parsed.year <= _ZERO_TIME_YEAR:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


Text = Annotated[str, BeforeValidator(_text)]
TextMap = Annotated[dict[str, str], BeforeValidator(_text_map)]
Time = Annotated[datetime | None, BeforeValidator(_time)]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class SourceAlert(_Lenient):
    """One alert of a notification (Alertmanager's fields, and Grafana's additions)."""

    status: Text = "firing"
    labels: TextMap = Field(default_factory=dict)
    annotations: TextMap = Field(default_factory=dict)
    starts_at: Time = Field(None, alias="startsAt")
    ends_at: Time = Field(None, alias="endsAt")
    generator_url: Text = Field("", alias="generatorURL")
    fingerprint: Text = ""
    silence_url: Text = Field("", alias="silenceURL")
    dashboard_url: Text = Field("", alias="dashboardURL")
    panel_url: Text = Field("", alias="panelURL")
    image_url: Text = Field("", alias="imageURL")


class Notification(_Lenient):
    """A webhook body of Alertmanager (``version`` "4") or Grafana: a group of alerts."""

    alerts: list[SourceAlert]
    status: Text = ""
    receiver: Text = ""
    group_key: Text = Field("", alias="groupKey")
    version: Text = ""
    external_url: Text = Field("", alias="externalURL")
    truncated_alerts: int = Field(0, alias="truncatedAlerts")

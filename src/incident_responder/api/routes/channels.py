"""Notification channels of the tenant: Slack, PagerDuty (Events API v2), signed webhooks."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from incident_responder.api.deps import ServicesDep, TenantDep
from incident_responder.api.schemas import ERROR_RESPONSES, ChannelIn
from incident_responder.errors import InvalidInput
from incident_responder.ids import new_event_id
from incident_responder.models import Ticket, utcnow
from incident_responder.notifications.channels import shown
from incident_responder.notifications.model import Channel, default_events

router = APIRouter(prefix="/v1/notifications/channels", tags=["notifications"], responses=ERROR_RESPONSES)
ChannelId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")]


@router.put("/{channel_id}", status_code=200)
async def put_channel(
    channel_id: ChannelId, body: ChannelIn, services: ServicesDep, tenant: TenantDep
) -> JSONResponse:
    """Create (201) or replace (200) a channel. A secret or routing key sent back masked, as a
    GET shows it, keeps the stored one. Without ``events``: every event, except ``flapping``
    for PagerDuty (a flapping ticket does not page again)."""
    fields = body.model_dump(exclude_unset=True)
    fields.setdefault("events", default_events(body.kind))
    channel = Channel(channel_id=channel_id, **fields)
    created = await services.stages.run("store", lambda: services.channels.put(tenant, channel))
    return JSONResponse(shown(channel), status_code=201 if created else 200)


@router.get("")
async def list_channels(services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    channels = await services.stages.run("store", lambda: services.channels.all(tenant))
    return {"channels": [shown(c) for _, c in sorted(channels.items())]}


@router.get("/{channel_id}")
async def get_channel(channel_id: ChannelId, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    return shown(await services.stages.run("store", lambda: services.channels.get(tenant, channel_id)))


@router.delete("/{channel_id}", status_code=204)
async def delete_channel(channel_id: ChannelId, services: ServicesDep, tenant: TenantDep) -> JSONResponse:
    await services.stages.run("store", lambda: services.channels.delete(tenant, channel_id))
    return JSONResponse(None, status_code=204)


@router.post("/{channel_id}/test")
async def test_channel(channel_id: ChannelId, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """Send a test message to the channel now (not through the outbox): whether it was
    delivered, the receiver's HTTP status, and its error if it refused."""
    channel = await services.stages.run("store", lambda: services.channels.get(tenant, channel_id))
    now = utcnow()
    ticket = Ticket(
        ticket_id="tkt_test",
        tenant=tenant,
        service="incident-responder",
        title="Test notification from incident-responder",
        created_at=now,
        updated_at=now,
    )
    notice = services.pump.notice(ticket, "test", f"msg_test_{new_event_id()[4:]}", now)
    message = services.pump.message(channel, notice, time.time())
    if message is None:
        raise InvalidInput("the channel's settings cannot render a message")
    status, error = await services.dispatcher.try_once(channel, message)
    return {
        "delivered": not error,
        "status_code": status,
        "error": error or None,
        "message_id": notice.message_id,
    }

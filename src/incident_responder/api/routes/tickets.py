from __future__ import annotations

from typing import Annotated, Literal

import anyio.to_thread
from fastapi import APIRouter, Query

from incident_responder.api.deps import ServicesDep, TenantDep
from incident_responder.api.schemas import (
    ERROR_RESPONSES,
    CommentIn,
    MergeIn,
    ResolveIn,
    ServiceName,
    SplitIn,
    TicketOut,
    TicketPage,
)

router = APIRouter(prefix="/v1/tickets", tags=["tickets"], responses=ERROR_RESPONSES)


@router.get("", response_model=TicketPage)
async def list_tickets(
    services: ServicesDep,
    tenant: TenantDep,
    status: Literal["open", "resolved", "merged"] | None = None,
    service: Annotated[ServiceName | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")] = None,
) -> TicketPage:
    tickets, next_cursor = await anyio.to_thread.run_sync(
        lambda: services.tickets.page(tenant, status=status, service=service, limit=limit, cursor=cursor)
    )
    return TicketPage(tickets=[TicketOut.of(t) for t in tickets], next_cursor=next_cursor)


@router.get("/{ticket_id}", response_model=TicketOut)
async def get_ticket(ticket_id: str, services: ServicesDep, tenant: TenantDep) -> TicketOut:
    ticket, _ = await anyio.to_thread.run_sync(lambda: services.tickets.get(tenant, ticket_id))
    return TicketOut.of(ticket)


@router.post("/{ticket_id}/comments", response_model=TicketOut, status_code=201)
async def add_comment(ticket_id: str, body: CommentIn, services: ServicesDep, tenant: TenantDep) -> TicketOut:
    ticket = await anyio.to_thread.run_sync(
        lambda: services.desk.comment(tenant, ticket_id, body.author, body.body)
    )
    return TicketOut.of(ticket)


@router.post("/{ticket_id}/resolve", response_model=TicketOut)
async def resolve_ticket(
    ticket_id: str, services: ServicesDep, tenant: TenantDep, body: ResolveIn | None = None
) -> TicketOut:
    resolution = body.resolution if body else None
    ticket = await anyio.to_thread.run_sync(lambda: services.desk.resolve(tenant, ticket_id, resolution))
    return TicketOut.of(ticket)


@router.post("/{ticket_id}/merge", response_model=TicketOut)
async def merge_ticket(ticket_id: str, body: MergeIn, services: ServicesDep, tenant: TenantDep) -> TicketOut:
    """Merge this ticket into ``into``: the survivor. Later reports like either join the survivor."""
    ticket = await anyio.to_thread.run_sync(lambda: services.corrections.merge(tenant, ticket_id, body.into))
    return TicketOut.of(ticket)


@router.post("/{ticket_id}/split", response_model=TicketOut, status_code=201)
async def split_ticket(ticket_id: str, body: SplitIn, services: ServicesDep, tenant: TenantDep) -> TicketOut:
    """Move these reports (every report of their forms) to a new ticket: the new ticket."""
    ticket = await anyio.to_thread.run_sync(
        lambda: services.corrections.split(tenant, ticket_id, body.incident_ids)
    )
    return TicketOut.of(ticket)

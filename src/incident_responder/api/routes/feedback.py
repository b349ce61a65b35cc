"""Votes on tickets' recommendations: ``POST /v1/tickets/{id}/feedback`` and its listing.

Each vote records which recommendation it was about (its ``source`` and recommender A/B
``variant``) and is counted in ``ir_recommendation_votes_total{variant,vote}``.
"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from incident_responder.api.deps import ServicesDep, TenantDep
from incident_responder.api.schemas import ERROR_RESPONSES, PlainText, VisibleText
from incident_responder.models import FEEDBACK_COMMENT_CHARS, Feedback, Ticket

router = APIRouter(prefix="/v1/tickets", tags=["tickets"], responses=ERROR_RESPONSES)


class FeedbackIn(BaseModel):
    """A vote on a ticket's recommendation: was it helpful, and optionally why and who says so."""

    model_config = ConfigDict(extra="forbid")

    helpful: StrictBool
    comment: Annotated[PlainText, Field(max_length=FEEDBACK_COMMENT_CHARS)] | None = None
    author: Annotated[VisibleText, Field(min_length=1, max_length=200)] | None = None


class FeedbackOut(BaseModel):
    """A ticket's votes: the counts of all of them and the newest ones kept (oldest first); after a
    vote, ``votes`` holds only that one."""

    ticket_id: str
    variant: str | None  # the recommender A/B arm of the ticket's recommendation (None: no A/B)
    source: str | None  # the recommender that wrote it (None: the ticket has no recommendation)
    helpful_votes: int
    unhelpful_votes: int
    votes: list[Feedback]

    @classmethod
    def of(cls, ticket: Ticket, votes: list[Feedback]) -> FeedbackOut:
        shown = ticket.recommendation
        return cls(
            ticket_id=ticket.ticket_id,
            variant=shown.variant if shown else None,
            source=shown.source if shown else None,
            helpful_votes=ticket.helpful_votes,
            unhelpful_votes=ticket.unhelpful_votes,
            votes=votes,
        )


@router.post(
    "/{ticket_id}/feedback",
    response_model=FeedbackOut,
    status_code=201,
    summary="Vote on a ticket's recommendation (409 if it has none)",
)
async def add_feedback(
    ticket_id: str, body: FeedbackIn, services: ServicesDep, tenant: TenantDep
) -> FeedbackOut:
    ticket = await anyio.to_thread.run_sync(
        lambda: services.desk.feedback(
            tenant, ticket_id, helpful=body.helpful, comment=body.comment, author=body.author
        )
    )
    vote = ticket.feedback[-1]
    services.metrics.count_vote(vote.variant, vote.helpful)
    return FeedbackOut.of(ticket, [vote])


@router.get(
    "/{ticket_id}/feedback", response_model=FeedbackOut, summary="The votes on a ticket's recommendation"
)
async def list_feedback(ticket_id: str, services: ServicesDep, tenant: TenantDep) -> FeedbackOut:
    ticket, _ = await anyio.to_thread.run_sync(lambda: services.tickets.get(tenant, ticket_id))
    return FeedbackOut.of(ticket, ticket.feedback)

"""Late recommendations (an LLM asked after its ticket opened) during the recommender A/B.

One :class:`~incident_responder.pipeline.late_recommendations.LateRecommendations` queue per
arm, each asking only its arm's recommender: so each tells its own LLM's answer from its
offline fallback's (whose answer the ticket has already) by its own recommender's name, as
without the A/B, and two LLMs can be compared. Each ask goes to the queue of its ticket's
variant, computed again from the ask's log (so asks resumed after a restart go where they
went before). While the A/B runs, no answer is reused between tickets (``cache`` is not
given): a reused answer could cross from one arm to the other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from incident_responder.backends.recommenders.split import VARIANTS, SplitRecommender
from incident_responder.pipeline.late_recommendations import Ask, LateRecommendations
from incident_responder.pipeline.recommendation_cache import RecommendationCache
from incident_responder.pipeline.runbooks import RunbookCatalog
from incident_responder.pipeline.stages import StageRunner
from incident_responder.pipeline.ticketing import TicketDesk
from incident_responder.ports import ObjectStore, ObjectWrite, Recommender
from incident_responder.repositories import TicketRepository

__all__ = ["SplitLateRecommendations", "late_recommendations"]


class SplitLateRecommendations(LateRecommendations):
    """The late recommendations of an A/B: every ask is handed to the queue of its variant.

    A ``LateRecommendations`` to its callers; every public method is its arms' queues' (made by
    ``queues``), so it keeps no queue of its own. ``name`` (what a ticket's answer at opening is
    compared with, to know that an LLM is still to come) is the remote arm's, A's if both are.
    """

    def __init__(  # no super().__init__(): nothing of the base class's own state is used
        self, split: SplitRecommender, queues: Callable[[Recommender], LateRecommendations]
    ) -> None:
        arms = split.arms
        self._split = split
        self._queues = {variant: queues(arms[variant]) for variant in VARIANTS}
        remote = [arms[v] for v in VARIANTS if arms[v].remote] or [arms["A"]]
        self._name = remote[0].name

    @property
    def name(self) -> str:
        return self._name

    def queue(self, variant: str) -> LateRecommendations:
        """The queue of one arm."""
        return self._queues[variant]

    def writes(self, ask: Ask) -> list[ObjectWrite]:
        return self._queues["A"].writes(ask)  # one durable ask per ticket, whichever its arm

    def submit(self, asks: Sequence[Ask]) -> None:
        for variant, queue in self._queues.items():
            queue.submit([ask for ask in asks if self._split.variant_of(ask.log) == variant])

    def pending(self, tenants: Sequence[str]) -> list[Ask]:
        return self._queues["A"].pending(tenants)  # every arm's: ``submit`` sorts them

    async def close(self) -> None:
        for queue in self._queues.values():
            await queue.close()


def late_recommendations(
    recommender: Recommender,
    *,
    objects: ObjectStore,
    tickets: TicketRepository,
    desk: TicketDesk,
    catalog: RunbookCatalog,
    stages: StageRunner,
    cache: RecommendationCache | None,
    on_answer: Callable[[str], None],
) -> LateRecommendations:
    """The late recommendations of ``recommender``: one queue, or one per arm of an A/B (then
    without ``cache``)."""

    def queue(asked: Recommender, cache: RecommendationCache | None = None) -> LateRecommendations:
        return LateRecommendations(
            recommender=asked,
            objects=objects,
            tickets=tickets,
            desk=desk,
            catalog=catalog,
            stages=stages,
            cache=cache,
            on_answer=on_answer,
        )

    if isinstance(recommender, SplitRecommender):
        return SplitLateRecommendations(recommender, queue)
    return queue(recommender, cache)

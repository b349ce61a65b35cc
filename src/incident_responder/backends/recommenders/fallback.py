"""A recommender that falls back to another (typically the offline one) when the first fails."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import structlog

from incident_responder.errors import IncidentResponderError
from incident_responder.models import Recommendation, RunbookChunk
from incident_responder.ports import Recommender

__all__ = ["FallbackRecommender"]

_log = structlog.get_logger(__name__)


class FallbackRecommender:
    """Uses ``primary``; on any ``IncidentResponderError`` from it, or an empty answer, uses ``fallback``.

    The returned recommendation's ``source`` tells which one actually answered. Errors raised by
    ``fallback`` propagate. Every fallback is logged as ``recommend.fallback`` with the error code
    only (never the message, which could come from a vendor).
    """

    def __init__(self, primary: Recommender, fallback: Recommender) -> None:
        self._primary = primary
        self._fallback = fallback

    @property
    def name(self) -> str:
        return self._primary.name

    @property
    def remote(self) -> bool:
        return self._primary.remote

    @property
    def primary(self) -> Recommender:
        return self._primary

    @property
    def fallback(self) -> Recommender:
        return self._fallback

    def recommend(
        self, log: str, chunks: Sequence[RunbookChunk], titles: Mapping[str, str]
    ) -> Recommendation | None:
        try:
            result = self._primary.recommend(log, chunks, titles)
        except IncidentResponderError as exc:
            _log.warning(
                "recommend.fallback",
                primary=self._primary.name,
                fallback=self._fallback.name,
                error=exc.code,
                error_type=type(exc).__name__,
                retryable=exc.retryable,
            )
            return self._fallback.recommend(log, chunks, titles)
        if result is not None:
            return result
        backup = self._fallback.recommend(log, chunks, titles)
        if backup is not None:
            _log.info(
                "recommend.fallback",
                primary=self._primary.name,
                fallback=self._fallback.name,
                error="empty",
                retryable=False,
            )
        return backup

"""An alert source's notification -> one report per alert -> the intake, in order."""

from __future__ import annotations

from collections.abc import Sequence

from incident_responder.alerts.payloads import SourceAlert
from incident_responder.alerts.reading import AlertReader
from incident_responder.models import AlertSourceName, IncidentResult
from incident_responder.pipeline.responder import Responder
from incident_responder.pipeline.stages import StageRunner
from incident_responder.policies import PolicyBook


class AlertIntake:
    """Reads each alert of a notification as a report (by its tenant's service labels) and
    hands them to the responder, ``max_batch`` at a time."""

    def __init__(
        self,
        *,
        reader: AlertReader,
        responder: Responder,
        policies: PolicyBook,
        stages: StageRunner,
        max_batch: int,
    ) -> None:
        self._reader = reader
        self._responder = responder
        self._policies = policies
        self._stages = stages
        self._max_batch = max_batch

    async def receive(
        self, tenant: str, source: AlertSourceName, alerts: Sequence[SourceAlert]
    ) -> list[IncidentResult]:
        """The outcome of each alert, in order (a resolved one: ``resolved`` with its ticket)."""
        if not alerts:
            return []
        policy = await self._stages.run("policy", lambda: self._policies.get(tenant))
        labels = policy.service_labels
        reports = [self._reader.report(a, source, service_labels=labels) for a in alerts]
        results: list[IncidentResult] = []
        for start in range(0, len(reports), self._max_batch):
            results += await self._responder.handle_batch(tenant, reports[start : start + self._max_batch])
        return results

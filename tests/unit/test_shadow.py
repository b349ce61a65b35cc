"""The shadow's own rules: a failure deciding one report skips that report and nothing else."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from incident_responder.models import IncidentResult
from incident_responder.pipeline.matching import DEFAULT_THRESHOLDS
from incident_responder.pipeline.normalize import LogNormalizer, normalizer_without
from incident_responder.pipeline.shadow import Shadow


class _Embedder:
    """Embeds by a fixed rule; refuses texts that contain ``boom`` (a model failing on one text)."""

    dim = 4

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if any("boom" in t for t in texts):
            raise RuntimeError("the model failed")
        return np.tile(np.asarray([1.0, 0.0, 0.0, 0.0], dtype=np.float32), (len(texts), 1))


def _result(n: int, ticket: str, status: str = "new") -> IncidentResult:
    return IncidentResult(incident_id=f"inc_{n}", ticket_id=ticket, status=status)


async def test_a_report_the_shadow_cannot_decide_is_skipped_and_the_next_one_decided() -> None:
    normalizer, version = normalizer_without(["email"])  # its embed texts differ: it embeds
    shadow = Shadow(
        normalizer=normalizer,
        version=version,
        thresholds=DEFAULT_THRESHOLDS,
        embedder=_Embedder(),
        search_limit=5,
    )
    live = LogNormalizer()
    logs = ["mail to ann@example.org bounced: boom", "mail to bob@example.org bounced"]
    shadow.observe(
        "acme",
        [
            ("mail", log, live.normalize(log).embed_text, None, _result(i, f"tkt_{i}"))
            for i, log in enumerate(logs)
        ],
    )
    await shadow.drained()
    counts = shadow.report("acme")["counts"]
    assert counts == {"agree": 1, "disagree": 0, "warming_up": 0, "dropped": 0}  # the first was skipped
    await shadow.close()

"""`eval --learning-curve`: corrections a simulated person makes teach later grouping."""

from __future__ import annotations

import json
from pathlib import Path

from incident_responder.evaluation import learning_curve
from incident_responder.ports import Embedder

QUEUES = ("alpha", "beta", "gamma", "delta", "epsilon")


def _queue(queue: str, n: int) -> str:
    # One skeleton, a different queue per true group: the template tier joins them all.
    return (
        f"2026-11-20T10:{n % 60:02d}:00Z ERROR dispatcher[{300 + n}]: worker pool drained with "
        f"{n} tasks pending on queue {queue} after reconnecting to broker mq-{n}.internal on port 5672"
    )


def _disk(n: int, phrasing: int) -> str:
    # Two phrasings of one incident (one true group): they open two tickets.
    if phrasing == 0:
        return f"2026-11-20T11:{n % 60:02d}:13Z ERROR writer[{200 + n}]: write /data/seg-{n}: No space left"
    return f"kernel: EXT4-fs warning (device sda{n % 4}): ext4_dx_add_entry: Directory index full!"


def _labelled_set(path: Path) -> Path:
    records = []
    for n in range(1, 9):
        records += [{"service": "queues", "log": _queue(q, n), "group": q} for q in QUEUES]
        records.append({"service": "disk", "log": _disk(n, n % 2), "group": "full"})
        # two true groups told apart only by a value the normalizer masks: one form, so a
        # split cannot separate them (not correctable, never counted)
        records.append(
            {"service": "codes", "log": f"job {n} exited with code {n % 2}", "group": f"code{n % 2}"}
        )
    path.mkdir()
    (path / "dedup.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


async def test_corrections_improve_later_grouping(tmp_path: Path, embedder: Embedder) -> None:
    data = _labelled_set(tmp_path / "set")
    points = await learning_curve(data, (0, 1, 5, 20), embedder=embedder)
    by_budget = {p.budget: p for p in points}
    assert by_budget[0].corrections == 0
    assert by_budget[1].corrections == 1
    assert 1 < by_budget[20].corrections <= 20
    # every correction budget does at least as well as a smaller one, and the full one far better
    gas = [p.ga for p in points]
    assert gas == sorted(gas)
    for service in ("queues", "disk"):
        assert by_budget[0].per_service[service].ga < 1.0
        assert by_budget[20].per_service[service].ga == by_budget[20].per_service[service].f1 == 1.0
    # fewer corrections than wrong decisions: the later ones were learned, not corrected one by one
    assert by_budget[20].corrections < len(QUEUES) * 8
    # the uncorrectable service stays as it was, whatever the budget
    codes = [p.per_service["codes"].ga for p in points]
    assert codes == [codes[0]] * len(points) and codes[0] < 1.0

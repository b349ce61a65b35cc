"""The coalescer: what is submitted while a group runs becomes the next group, per tenant."""

from __future__ import annotations

import asyncio

import pytest

from incident_responder.pipeline.coalescing import Coalescer


class _Recorder:
    def __init__(self) -> None:
        self.groups: list[tuple[str, list[int]]] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.fail_next = False

    async def process(self, tenant: str, items: list[int]) -> list[str]:
        self.groups.append((tenant, list(items)))
        gate = self.gates.get(tenant)
        if gate is not None:
            await gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("store down")
        return [f"{tenant}:{i}" for i in items]


async def test_submissions_during_a_group_form_the_next_group_in_order() -> None:
    rec = _Recorder()
    rec.gates["t"] = asyncio.Event()
    coalescer: Coalescer[int, str] = Coalescer(rec.process)
    first = asyncio.create_task(coalescer.submit("t", [1, 2]))
    await asyncio.sleep(0)
    later = [asyncio.create_task(coalescer.submit("t", [10 * n, 10 * n + 1])) for n in range(1, 4)]
    await asyncio.sleep(0)
    rec.gates["t"].set()
    assert await first == ["t:1", "t:2"]
    assert [await task for task in later] == [["t:10", "t:11"], ["t:20", "t:21"], ["t:30", "t:31"]]
    assert rec.groups == [("t", [1, 2]), ("t", [10, 11, 20, 21, 30, 31])]


async def test_a_failed_group_fails_its_submitters_only() -> None:
    rec = _Recorder()
    rec.gates["t"] = asyncio.Event()
    coalescer: Coalescer[int, str] = Coalescer(rec.process)
    rec.fail_next = True
    doomed = [asyncio.create_task(coalescer.submit("t", [n])) for n in range(3)]
    await asyncio.sleep(0)
    rec.gates["t"].set()
    for task in doomed:
        with pytest.raises(RuntimeError, match="store down"):
            await task
    assert await coalescer.submit("t", [7]) == ["t:7"]


async def test_a_slow_tenant_does_not_hold_up_another() -> None:
    rec = _Recorder()
    rec.gates["slow"] = asyncio.Event()
    coalescer: Coalescer[int, str] = Coalescer(rec.process)
    slow = asyncio.create_task(coalescer.submit("slow", [1]))
    await asyncio.sleep(0)
    assert await asyncio.wait_for(coalescer.submit("fast", [2]), timeout=1) == ["fast:2"]
    assert not slow.done()
    rec.gates["slow"].set()
    assert await slow == ["slow:1"]


async def test_a_cancelled_submitter_does_not_disturb_the_others() -> None:
    rec = _Recorder()
    rec.gates["t"] = asyncio.Event()
    coalescer: Coalescer[int, str] = Coalescer(rec.process)
    blocker = asyncio.create_task(coalescer.submit("t", [0]))
    await asyncio.sleep(0)
    gone = asyncio.create_task(coalescer.submit("t", [1]))
    kept = asyncio.create_task(coalescer.submit("t", [2]))
    await asyncio.sleep(0)
    gone.cancel()
    rec.gates["t"].set()
    assert await blocker == ["t:0"] and await kept == ["t:2"]
    assert rec.groups[-1] == ("t", [1, 2])  # its items were processed all the same

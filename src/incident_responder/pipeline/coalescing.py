"""How reports are grouped on their way to tickets: coalesced per tenant (what arrives while
the previous group is processed is processed next, as one group) or one at a time.

The responder decides reports with unknown fingerprints, and opens the tickets they
need, in groups (one write of each kind per group). Without this, each single-report
request would be its own group; with it, the reports of every request that arrived
meanwhile share the next one. There is no timer: an idle server processes a request at
once, a busy one processes bigger groups. Each tenant has its own queue, so a slow
group of one tenant (an LLM writing recommendations) never holds up another's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")
T_contra = TypeVar("T_contra", contravariant=True)


class Grouper(Protocol[T_contra, R]):
    """Processes a request's items, in order, in some group of its tenant."""

    async def submit(self, tenant: str, items: Sequence[T_contra]) -> list[R]:
        """One result per item, in order."""
        ...


class OneAtATime(Generic[T, R]):
    """Every item its own group, the requests never combined (the benchmark's naive server)."""

    def __init__(self, process: Callable[[str, list[T]], Awaitable[list[R]]]) -> None:
        self._process = process

    async def submit(self, tenant: str, items: Sequence[T]) -> list[R]:
        return [result for item in items for result in await self._process(tenant, [item])]


class Coalescer(Generic[T, R]):
    """Each tenant's queue of requests: what arrives while a group is processed forms the next."""

    def __init__(self, process: Callable[[str, list[T]], Awaitable[list[R]]]) -> None:
        """``process(tenant, items)`` answers one result per item, in order."""
        self._process = process
        self._queues: dict[str, list[tuple[Sequence[T], asyncio.Future[list[R]]]]] = {}
        self._drainers: dict[str, asyncio.Task[None]] = {}

    async def submit(self, tenant: str, items: Sequence[T]) -> list[R]:
        """Process ``items`` (kept in order and together) in the tenant's next group."""
        future: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(tenant, []).append((items, future))
        drainer = self._drainers.get(tenant)
        if drainer is None or drainer.done():
            self._drainers[tenant] = asyncio.create_task(self._drain(tenant))
        return await future

    async def _drain(self, tenant: str) -> None:
        while queued := self._queues.pop(tenant, []):
            combined = [item for items, _ in queued for item in items]
            try:
                results = await self._process(tenant, combined)
            except Exception as exc:  # every submitter of the group gets the failure
                for _, future in queued:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for items, future in queued:
                if not future.done():  # a cancelled submitter's items were processed all the same
                    future.set_result(results[start : start + len(items)])
                start += len(items)
        self._drainers.pop(tenant, None)

"""Dynamic micro-batching: concurrent requests' texts reach the model as one batch.

Up to ``concurrency`` batches run at once (one per model worker, see ``BertEmbedder``).
A text that finds a worker free starts a batch at once; while every worker is busy, new
texts gather into the next batch (up to ``max_batch``), which starts as soon as a worker
is free. So an idle server embeds a lone text without waiting, and a busy one runs
bigger batches by itself, which cost less CPU per text. ``max_wait`` > 0 also holds each
batch back that long to let it fill; it adds latency at idle and buys no throughput under
load, so the default is 0.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import anyio.to_thread
import numpy as np
import numpy.typing as npt

from incident_responder.ports import Embedder, Vector


class MicroBatcher:
    """Embeds the texts of concurrent callers together: batches of at most ``max_batch`` texts,
    at most ``concurrency`` of them at once (see the module doc)."""

    def __init__(
        self, embedder: Embedder, *, max_wait: float = 0.0, max_batch: int = 64, concurrency: int = 1
    ) -> None:
        self._embedder = embedder
        self._max_wait = max_wait
        self._max_batch = max_batch
        self._pending: list[tuple[str, asyncio.Future[Vector]]] = []
        self._full = asyncio.Event()
        self._collector: asyncio.Task[None] | None = None
        self._workers = asyncio.Semaphore(max(1, concurrency))
        self._running: set[asyncio.Task[None]] = set()

    async def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if len(texts) >= self._max_batch:  # already a batch: no reason to wait
            return await anyio.to_thread.run_sync(self._embedder.embed, list(texts))
        loop = asyncio.get_running_loop()
        futures = []
        for text in texts:
            future: asyncio.Future[Vector] = loop.create_future()
            self._pending.append((text, future))
            futures.append(future)
        if len(self._pending) >= self._max_batch:
            self._full.set()
        if self._collector is None or self._collector.done():
            self._collector = asyncio.create_task(self._collect())
        vectors = await asyncio.gather(*futures)
        return np.stack(vectors) if vectors else np.zeros((0, self._embedder.dim), dtype=np.float32)

    async def _collect(self) -> None:
        if self._max_wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), timeout=self._max_wait)
        while self._pending:
            await self._workers.acquire()  # meanwhile, what arrives joins this batch
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            self._full.clear()
            task = asyncio.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[str, asyncio.Future[Vector]]]) -> None:
        try:
            vectors = await anyio.to_thread.run_sync(self._embedder.embed, [t for t, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        finally:
            self._workers.release()
        for i, (_, future) in enumerate(batch):
            if not future.done():
                future.set_result(vectors[i])

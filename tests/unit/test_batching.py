"""The micro-batcher, with a counting embedder (a port implementation, not a patch)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from incident_responder.pipeline.batching import MicroBatcher


class CountingEmbedder:
    """Deterministic 4-d vectors from the text's hash; records every batch it gets."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return 4

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        with self._lock:
            self.batches.append(list(texts))
        rows = [np.random.default_rng(abs(hash(t)) % 2**32).random(4).astype(np.float32) for t in texts]
        return np.stack([r / np.linalg.norm(r) for r in rows]) if rows else np.zeros((0, 4), np.float32)


async def test_concurrent_callers_share_one_model_call() -> None:
    inner = CountingEmbedder()
    batcher = MicroBatcher(inner, max_wait=0.05, max_batch=64)
    results = await asyncio.gather(*(batcher.embed([f"t{i}"]) for i in range(10)))
    assert len(inner.batches) == 1 and sorted(inner.batches[0]) == sorted(f"t{i}" for i in range(10))
    direct = inner.embed([f"t{i}" for i in range(10)])
    for i, r in enumerate(results):
        assert r.shape == (1, 4) and np.allclose(r[0], direct[i])


async def test_full_batches_do_not_wait_and_big_requests_go_straight_through() -> None:
    inner = CountingEmbedder()
    batcher = MicroBatcher(inner, max_wait=5.0, max_batch=4)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(*(batcher.embed([f"u{i}"]) for i in range(8)))
    assert loop.time() - started < 1.0, "a full batch must flush at once, not after max_wait"
    assert [len(b) for b in inner.batches] == [4, 4]
    await batcher.embed([f"v{i}" for i in range(4)])
    assert inner.batches[-1] == [f"v{i}" for i in range(4)]


async def test_a_failing_model_call_fails_its_callers_only() -> None:
    class Broken(CountingEmbedder):
        def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
            raise RuntimeError("model crashed")

    batcher = MicroBatcher(Broken(), max_wait=0.01)
    with pytest.raises(RuntimeError, match="model crashed"):
        await batcher.embed(["a"])
    ok = MicroBatcher(CountingEmbedder(), max_wait=0.01)
    assert (await ok.embed(["a"])).shape == (1, 4)


@pytest.mark.parametrize("max_wait", [0.0, 0.001])
async def test_batches_run_side_by_side_up_to_the_concurrency_and_the_rest_waits_together(
    max_wait: float,
) -> None:
    class Slow(CountingEmbedder):
        """Each call blocks until released; records how many run at once."""

        def __init__(self) -> None:
            super().__init__()
            self.release = threading.Event()
            self.running = 0
            self.most = 0

        def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
            with self._lock:
                self.running += 1
                self.most = max(self.most, self.running)
            self.release.wait(10)
            try:
                return super().embed(texts)
            finally:
                with self._lock:
                    self.running -= 1

    inner = Slow()
    batcher = MicroBatcher(inner, max_wait=max_wait, max_batch=64, concurrency=2)
    first = [asyncio.create_task(batcher.embed([f"a{i}"])) for i in range(2)]
    await asyncio.sleep(0.05)  # batch 1 (a0, a1) is in the model
    second = asyncio.create_task(batcher.embed(["b0"]))
    await asyncio.sleep(0.05)  # batch 2 (b0) runs beside it: two workers
    later = [asyncio.create_task(batcher.embed([f"c{i}"])) for i in range(5)]
    await asyncio.sleep(0.05)  # both workers busy: the c's wait, together
    assert inner.running == 2 and len(inner.batches) == 0
    inner.release.set()
    results = await asyncio.gather(*first, second, *later)
    assert all(r.shape == (1, 4) for r in results)
    assert inner.most == 2
    assert sorted(sorted(b) for b in inner.batches) == [["a0", "a1"], ["b0"], [f"c{i}" for i in range(5)]]

"""The garbage-collector settings the server applies once it is ready."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator

import anyio
import httpx
import pytest

from incident_responder.api.app import create_app
from incident_responder.container import Services
from incident_responder.gc_tuning import tune_gc
from incident_responder.settings import Settings


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_tune_gc_freezes_the_heap_and_raises_the_young_threshold(restored_gc: None) -> None:
    older = gc.get_threshold()[1:]
    tune_gc(freeze=True, young_threshold=12_345)
    assert gc.get_threshold() == (12_345, *older)
    assert gc.get_freeze_count() > 10_000  # this test process's modules at least


def test_tune_gc_with_nothing_asked_changes_nothing(restored_gc: None) -> None:
    before = gc.get_threshold()
    tune_gc(freeze=False, young_threshold=0)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def _build_with(services: Services) -> Callable[[Settings, object], Services]:
    return lambda _settings, _metrics: services


@pytest.mark.parametrize(("naive", "tuned"), [(False, True), (True, False)])
async def test_the_server_tunes_gc_once_its_services_are_built_unless_naive(
    restored_gc: None,
    make_settings: Callable[..., Settings],
    make_services: Callable[..., Services],
    naive: bool,
    tuned: bool,
) -> None:
    settings = make_settings(performance={"naive": naive, "gc_young_threshold": 4_321})
    app = create_app(settings, build=_build_with(make_services(settings)))
    before = gc.get_threshold()
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            for _ in range(200):
                if (await http.get("/readyz")).status_code == 200:
                    break
                await anyio.sleep(0.01)
            assert (await http.get("/readyz")).status_code == 200
        assert (gc.get_freeze_count() > 0) is tuned
        assert gc.get_threshold()[0] == (4_321 if tuned else before[0])

"""Shared fixtures: the real embedding model, loaded once per session."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from incident_responder.settings import Settings

if TYPE_CHECKING:
    import httpx

    from incident_responder.container import Services
    from incident_responder.ports import Embedder

# Real S3 servers (moto, SeaweedFS) and vector servers (pgvector, fake Pinecone), started on demand.
pytest_plugins = ["tests.s3_servers", "tests.vector_servers"]

KEYS = "acme:acme-key-123,globex:globex-key-456"
ACME = {"X-API-Key": "acme-key-123"}
GLOBEX = {"X-API-Key": "globex-key-456"}


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The embedder the service loads by default (the packaged model on torch)."""
    from incident_responder.backends.embedding.bert import load_embedder

    return load_embedder()


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {"data_dir": tmp_path / "data", "api_keys": KEYS}
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def make_services(
    make_settings: Callable[..., Settings], embedder: Embedder
) -> Iterator[Callable[..., Services]]:
    from incident_responder.container import build_services

    opened: list[Services] = []

    def make(settings: Settings | None = None) -> Services:
        services = build_services(settings or make_settings(), embedder=embedder)
        opened.append(services)
        return services

    yield make
    for services in opened:
        with contextlib.suppress(Exception):  # a test may have closed it already
            services.close()


MakeClient = Callable[..., contextlib.AbstractAsyncContextManager["httpx.AsyncClient"]]


@pytest.fixture
def make_client(make_services: Callable[..., Services], make_settings: Callable[..., Settings]) -> MakeClient:
    """``async with make_client(**setting_overrides) as http``: an HTTP client of an app on
    those settings (in process, over ASGI)."""
    import httpx

    from incident_responder.api.app import create_app

    @contextlib.asynccontextmanager
    async def make(**overrides: object) -> AsyncIterator[httpx.AsyncClient]:
        settings = make_settings(**overrides)
        app = create_app(settings, services=make_services(settings))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            yield http

    return make


@pytest.fixture
async def client(make_client: MakeClient) -> AsyncIterator[object]:
    async with make_client() as http:
        yield http

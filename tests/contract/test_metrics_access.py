"""Who may read /metrics, and how many series one flood of names can add."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from prometheus_client import CollectorRegistry

from incident_responder.api import serving
from incident_responder.api.app import create_app
from incident_responder.container import Services
from incident_responder.observability.metrics import Metrics
from incident_responder.settings import Settings
from tests.conftest import ACME, MakeClient
from tests.s3_servers import free_port


async def test_a_metrics_token_is_asked_for_when_set(make_client: MakeClient) -> None:
    async with make_client(metrics={"token": "scrape-token-1"}) as http:
        assert (await http.get("/metrics")).status_code == 401
        assert (await http.get("/metrics", headers=ACME)).status_code == 401  # an API key is not the token
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
        ok = await http.get("/metrics", headers={"Authorization": "Bearer scrape-token-1"})
        assert ok.status_code == 200 and "ir_http_requests_total" in ok.text


async def test_metrics_on_their_own_port_leave_the_api_port(
    make_settings: Callable[..., Settings], make_services: Callable[..., Services]
) -> None:
    settings = make_settings(metrics={"port": free_port()})
    app = create_app(settings, services=make_services(settings))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        assert (await http.get("/metrics")).status_code == 404
        assert (
            await http.post("/v1/incidents", json={"service": "api", "log": "x"}, headers=ACME)
        ).is_success
    server = serving.expose_metrics(settings, app.state.metrics.exposed())
    assert server is not None
    try:
        async with httpx.AsyncClient() as scraper:
            scraped = await scraper.get(f"http://127.0.0.1:{settings.metrics.port}/metrics", timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert scraped.status_code == 200 and 'ir_incidents_total{service="api",status="new"} 1.0' in scraped.text


def test_label_values_are_bounded() -> None:
    metrics = Metrics(max_services=3, max_tenants=2, tenant_label=True)
    for i in range(50):
        metrics.count_incident("new", f"svc-{i}", f"tenant-{i % 5}")
    registry: CollectorRegistry = metrics.exposed()
    labels = [
        sample.labels
        for family in registry.collect()
        for sample in family.samples
        if sample.name == "ir_incidents_total"
    ]
    assert {lab["service"] for lab in labels} == {"svc-0", "svc-1", "svc-2", "other"}
    assert {lab["tenant"] for lab in labels} == {"tenant-0", "tenant-1", "other"}
    assert (
        sum(s.value for f in registry.collect() for s in f.samples if s.name == "ir_incidents_total") == 50
    )  # nothing is lost, only aggregated

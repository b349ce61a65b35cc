"""Shadow grouping: a candidate decides beside the live grouping, writes nothing, reports where it
disagrees (`GET /v1/shadow/report`), and `shadow promote` makes it live."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from incident_responder.container import Services
from incident_responder.errors import ConfigError
from incident_responder.pipeline.normalize import NORMALIZER_VERSION
from incident_responder.settings import Settings, load_settings
from tests.conftest import ACME, GLOBEX
from tests.contract.test_corrections_api import post, queue_log, serving
from tests.helpers import db_log, metric_total


def _digest(names: str) -> str:
    return hashlib.sha256(names.encode()).hexdigest()[:8]


def _mail_log(user: str, n: int) -> str:
    return f"2026-11-20T10:{n:02d}:00Z ERROR mailer[{n}]: bounce from {user}@example.org: mailbox unavailable"


async def test_a_stricter_candidate_disagrees_where_it_would_not_merge(
    make_settings: Callable[..., Settings], make_services: Callable[..., Services]
) -> None:
    services = make_services(make_settings(shadow={"enabled": True, "template_similarity": 0.99}))
    async with serving(services) as http:
        alpha = await post(http, "q", queue_log("alpha", 1))
        beta = await post(http, "q", queue_log("beta", 2))  # live: joined by template (0.94)
        await post(http, "q", queue_log("alpha", 3))  # both: the same form as the first
        assert beta["ticket_id"] == alpha["ticket_id"] and beta["match"]["method"] == "template"
        assert services.shadow is not None
        await services.shadow.drained()
        report = (await http.get("/v1/shadow/report", headers=ACME)).json()
        assert report["enabled"] is True and report["candidate"]["thresholds"]["template_similarity"] == 0.99
        assert report["counts"] == {"agree": 2, "disagree": 1, "warming_up": 0, "dropped": 0}
        assert report["agreement"] == round(2 / 3, 4)
        (seen,) = report["disagreements"]
        assert seen["incident_id"] == beta["incident_id"]
        assert (
            seen["live"]["ticket_id"] == alpha["ticket_id"] and seen["live"]["match"]["method"] == "template"
        )
        assert seen["shadow"]["would_join"] == "new" and seen["shadow"]["method"] is None
        # nothing written: one ticket, as the live grouping decided
        assert len((await http.get("/v1/tickets", headers=ACME)).json()["tickets"]) == 1
        # another tenant sees only its own comparisons; the counts are in /metrics
        other = (await http.get("/v1/shadow/report", headers=GLOBEX)).json()
        assert other["counts"]["agree"] == 0 and other["disagreements"] == []
        registry = services.metrics.registry
        assert metric_total(registry, "ir_shadow_decisions_total", verdict="disagree") == 1


async def test_a_candidate_table_without_a_rule_splits_what_the_rule_masked(
    make_settings: Callable[..., Settings], make_services: Callable[..., Services]
) -> None:
    candidate = {"enabled": True, "without_rules": ["email"], "template_similarity": 0.99}
    services = make_services(make_settings(shadow=candidate))
    async with serving(services) as http:
        first = await post(http, "mail", _mail_log("ann", 1))
        second = await post(http, "mail", _mail_log("bob", 2))
        assert second["ticket_id"] == first["ticket_id"] and second["match"]["method"] == "fingerprint"
        assert services.shadow is not None
        await services.shadow.drained()
        report = (await http.get("/v1/shadow/report", headers=ACME)).json()
        assert report["candidate"]["without_rules"] == ["email"]
        assert report["candidate"]["normalizer_version"] == f"{NORMALIZER_VERSION}-without-{_digest('email')}"
        assert report["counts"]["disagree"] == 1
        (seen,) = report["disagreements"]
        # the candidate table kept the address the live one masks
        assert "bob@example.org" in seen["shadow"]["report_template"]
        assert "bob@example.org" not in (seen["live"]["match"]["template"] or "")


async def test_reports_of_tickets_older_than_the_shadow_are_warm_up(
    make_settings: Callable[..., Settings], make_services: Callable[..., Services]
) -> None:
    async with serving(make_services(make_settings())) as http:
        assert (await http.get("/v1/shadow/report", headers=ACME)).json() == {"enabled": False}
        await post(http, "api", db_log(1))
    services = make_services(make_settings(shadow={"enabled": True}))
    async with serving(services) as http:
        await post(http, "api", db_log(2))  # joins a ticket the shadow never saw open
        await post(http, "api", db_log(3))
        assert services.shadow is not None
        await services.shadow.drained()
        counts = (await http.get("/v1/shadow/report", headers=ACME)).json()["counts"]
        assert counts == {"agree": 1, "disagree": 0, "warming_up": 1, "dropped": 0}


def test_unknown_rules_are_refused_at_start_up(
    make_settings: Callable[..., Settings], make_services: Callable[..., Services]
) -> None:
    with pytest.raises(ConfigError, match="unknown normalizer rules: nope"):
        make_services(make_settings(shadow={"enabled": True, "without_rules": ["nope"]}))
    with pytest.raises(ConfigError, match="unknown normalizer rules: nope"):
        make_services(make_settings(dedup={"without_rules": ["nope"]}))


def test_promote_makes_the_candidate_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from incident_responder.cli import app

    config = tmp_path / "ir.env"
    config.write_text(
        "IR_API_KEYS=acme:acme-key-123\n"
        "IR_SHADOW__ENABLED=true\n"
        "IR_SHADOW__TEMPLATE_SIMILARITY=0.95\n"
        'IR_SHADOW__WITHOUT_RULES=["email"]\n'
    )
    monkeypatch.setenv("IR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("IR_CONFIG_FILE", raising=False)
    runner = CliRunner()
    try:
        dry = runner.invoke(app, ["shadow", "promote", "--config-file", str(config), "--dry-run"])
        assert dry.exit_code == 0, dry.output
        assert "set   IR_DEDUP__TEMPLATE_SIMILARITY=0.95" in dry.output
        assert "IR_SHADOW__ENABLED=true" in config.read_text()  # a dry run writes nothing
        done = runner.invoke(app, ["shadow", "promote", "--config-file", str(config)])
        assert done.exit_code == 0, done.output
        again = runner.invoke(app, ["shadow", "promote", "--config-file", str(config)])
        assert again.exit_code == 1 and "no shadow grouping is configured" in again.output
        missing = runner.invoke(app, ["shadow", "promote", "--config-file", str(tmp_path / "nope.env")])
        assert missing.exit_code == 2
        assert "IR_CONFIG_FILE" not in os.environ  # the command leaves the environment alone
    finally:
        structlog.reset_defaults()
    monkeypatch.setenv("IR_CONFIG_FILE", str(config))
    live = load_settings()
    assert live.dedup.template_similarity == 0.95 and live.dedup.without_rules == ["email"]
    assert live.shadow.enabled is False and live.shadow.template_similarity is None


async def test_what_does_not_fit_in_the_queue_is_dropped_and_counted(
    make_settings: Callable[..., Settings], make_services: Callable[..., Services]
) -> None:
    services = make_services(make_settings(shadow={"enabled": True, "queue": 1}))
    async with serving(services) as http:
        batch = {"incidents": [{"service": "api", "log": db_log(n)} for n in range(20)]}
        r = await http.post("/v1/incidents/batch", json=batch, headers=ACME)
        assert r.status_code == 200, r.text
        assert services.shadow is not None
        await services.shadow.drained()
        counts = (await http.get("/v1/shadow/report", headers=ACME)).json()["counts"]
        assert counts["dropped"] == 19 and counts["agree"] == 1  # the live answers were all given
        registry = services.metrics.registry
        assert metric_total(registry, "ir_shadow_decisions_total", verdict="dropped") == 19

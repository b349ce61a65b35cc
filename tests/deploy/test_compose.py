"""deploy/compose.yaml: valid against the Compose Specification's JSON schema, configured with
settings that exist and load, every file it mounts present, the secrets that must match
matching, and the Prometheus and Alertmanager configs accepted by promtool and amtool.

The stack itself is not started here (no container images can be pulled on these machines):
docs/deploy.md says what was run."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml
from dotenv import dotenv_values

from incident_responder.api.auth import digest, parse_key_file
from incident_responder.settings import QdrantVectorSettings, S3TicketSettings, Settings
from tests.deploy.settings_check import DEPLOY, load_from, tool, unknown_names

COMPOSE = DEPLOY / "compose.yaml"
SCHEMA = Path(__file__).with_name("compose-spec.json")
SCHEMA_SHA256 = "56bab44c85c0ce8affb74474950293f37d510673283a243bcd7eeadb900fa35c"
REPLICAS = ("incident-responder-1", "incident-responder-2")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # resolves the << merge keys
    return loaded


def service(name: str) -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"][name]
    return found


def mounts(name: str) -> dict[str, Path]:
    """Container path -> file in the repository, for a service's bind mounts and secrets."""
    spec = compose()
    found: dict[str, Path] = {}
    for volume in service(name).get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            found[target] = (DEPLOY / source).resolve()
    for secret in service(name).get("secrets", []):
        found[f"/run/secrets/{secret}"] = (DEPLOY / spec["secrets"][secret]["file"]).resolve()
    return found


def secret_file(name: str) -> Path:
    return (DEPLOY / str(compose()["secrets"][name]["file"])).resolve()


def test_the_vendored_schema_is_the_published_one() -> None:
    text = SCHEMA.read_text()
    kept = "\n".join(line for line in text.split("\n") if '"$comment": "Vendored' not in line)
    assert hashlib.sha256(kept.encode()).hexdigest() == SCHEMA_SHA256


def test_compose_file_is_valid_against_the_compose_spec_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(compose())]
    assert not errors, "\n".join(errors)
    # The schema does refuse what it does not know (so the pass above means something).
    broken = compose()
    broken["services"]["proxy"]["restart_policy"] = "always"
    assert list(validator.iter_errors(broken))


def test_two_replicas_share_the_backends_with_a_data_volume_each() -> None:
    spec = compose()
    replicas = [n for n, s in spec["services"].items() if s.get("image") == "incident-responder:dev"]
    assert sorted(replicas) == sorted([*REPLICAS, "s3-init"])
    data = [v for name in REPLICAS for v in service(name)["volumes"] if v.endswith(":/data")]
    assert len(set(data)) == 2, data
    for name in REPLICAS:
        assert service(name)["read_only"] is True and "/tmp" in service(name)["tmpfs"]
        assert "ports" not in service(name)  # reached through the proxy only
    upstream = re.findall(r"^\s*server\s+(\S+):8080", (DEPLOY / "compose/nginx.conf").read_text(), re.M)
    assert sorted(upstream) == sorted(REPLICAS)


def env_of(name: str) -> dict[str, str]:
    return {k: str(v) for k, v in service(name)["environment"].items()}


def settings_of(name: str, monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> Settings:
    """The settings a container of ``name`` starts with (its secrets read from the repository)."""
    files = mounts(name)
    env = {k: str(files.get(v, v)) for k, v in env_of(name).items()}
    return load_from(env, monkeypatch, **overrides)


def test_the_services_use_only_real_setting_names() -> None:
    for name in (*REPLICAS, "s3-init"):
        assert not unknown_names(set(env_of(name))), name
    config = dotenv_values(secret_file("ir_config"))
    assert config and not unknown_names(set(config))


def test_the_replicas_settings_load_and_point_at_the_compose_services(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in REPLICAS:
        settings = settings_of(name, monkeypatch)
        assert isinstance(settings.tickets, S3TicketSettings)
        assert settings.tickets.endpoint_url == "http://seaweedfs:8333"
        assert (
            isinstance(settings.vector, QdrantVectorSettings) and settings.vector.url == "http://qdrant:6333"
        )
        assert settings.redis.url.get_secret_value() == "redis://redis:6379/0"
        assert settings.notifications.outbox == "redis"  # shared by the replicas
        assert settings.metrics.token.get_secret_value()
        assert settings.http.max_connections_per_client == 0  # behind the proxy
    init = settings_of("s3-init", monkeypatch, insecure_no_auth=True)  # as create_bucket.py loads them
    replica = settings_of(REPLICAS[0], monkeypatch)
    assert init.tickets == replica.tickets


def test_the_secrets_agree_with_each_other(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_of(REPLICAS[0], monkeypatch)
    key = secret_file("ir_api_key").read_text()
    entries = parse_key_file(secret_file("ir_api_keys").read_text())
    assert (digest(key.strip()), "default") in entries
    assert key == key.strip()  # read whole by Alertmanager's credentials_file
    token = secret_file("ir_metrics_token").read_text()
    assert token == settings.metrics.token.get_secret_value()
    identities = json.loads(secret_file("seaweedfs_s3").read_text())["identities"]
    credentials = {(c["accessKey"], c["secretKey"]) for i in identities for c in i["credentials"]}
    assert isinstance(settings.tickets, S3TicketSettings)
    tickets = settings.tickets
    assert (tickets.access_key_id.get_secret_value(), tickets.secret_access_key.get_secret_value()) in (
        credentials
    )


def test_every_referenced_file_exists() -> None:
    spec = compose()
    for name in spec["services"]:
        for container_path, source in mounts(name).items():
            assert source.exists(), f"{name}: {source} (mounted at {container_path})"
        build = spec["services"][name].get("build")
        if build:
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
    for secret in spec["secrets"].values():
        assert (DEPLOY / secret["file"]).is_file()


def rewrite_paths(text: str, files: dict[str, Path]) -> str:
    """A config's container paths replaced by the repository files mounted there."""
    for container_path, source in sorted(files.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(container_path, str(source))
    return text


def test_prometheus_scrapes_each_replica_with_the_token_and_loads_the_rules(tmp_path: Path) -> None:
    files = mounts("prometheus")
    config_path = files["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load(config_path.read_text())
    assert files[config["rule_files"][0]] == DEPLOY / "prometheus/alerts.yml"
    (job,) = config["scrape_configs"]
    assert job["authorization"]["type"] == "Bearer"
    assert files[job["authorization"]["credentials_file"]] == secret_file("ir_metrics_token")
    assert sorted(job["static_configs"][0]["targets"]) == sorted(f"{r}:8080" for r in REPLICAS)
    promtool = tool("promtool", "apt-get install prometheus")
    local = tmp_path / "prometheus.yml"
    local.write_text(rewrite_paths(config_path.read_text(), files))
    run = subprocess.run(
        [promtool, "check", "config", str(local)], capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS: 8 rules found" in run.stdout + run.stderr


def test_alertmanager_posts_to_the_webhook_with_the_api_key(tmp_path: Path) -> None:
    files = mounts("alertmanager")
    config_path = files["/etc/alertmanager/alertmanager.yml"]
    config = yaml.safe_load(config_path.read_text())
    (receiver,) = config["receivers"]
    (hook,) = receiver["webhook_configs"]
    assert hook["url"] == "http://proxy:8080/v1/alerts/alertmanager"
    assert hook["send_resolved"] is True
    auth = hook["http_config"]["authorization"]
    assert auth["type"] == "Bearer" and files[auth["credentials_file"]] == secret_file("ir_api_key")
    from incident_responder.settings import AlertSettings

    assert hook["max_alerts"] <= AlertSettings().max_per_request
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool is not installed (apt-get install prometheus-alertmanager)")
    local = tmp_path / "alertmanager.yml"
    local.write_text(rewrite_paths(config_path.read_text(), files))
    run = subprocess.run([amtool, "check-config", str(local)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stdout + run.stderr


def test_grafana_provisions_the_dashboard_and_its_data_source() -> None:
    files = mounts("grafana")
    provisioning = files["/etc/grafana/provisioning"]
    (provider,) = yaml.safe_load((provisioning / "dashboards/incident-responder.yml").read_text())[
        "providers"
    ]
    dashboards = PurePosixPath(provider["options"]["path"])
    dashboard = next(src for dst, src in files.items() if PurePosixPath(dst).parent == dashboards)
    assert dashboard == DEPLOY / "grafana/incident-responder.json"
    json.loads(dashboard.read_text())
    (source,) = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"

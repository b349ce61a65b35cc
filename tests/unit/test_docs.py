"""The reference docs that are generated stay current."""

from __future__ import annotations

from pathlib import Path

from incident_responder.settings import Settings, reference, reference_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_the_settings_page_is_current() -> None:
    page = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert page == reference_markdown(), "run: incident-responder config --markdown > docs/settings.md"


def test_every_setting_is_documented_with_a_meaning() -> None:
    rows = reference()
    assert all(meaning for _, _, meaning in rows)
    names = {env for env, _, _ in rows}
    assert {"IR_VECTOR__KIND", "IR_VECTOR__DSN", "IR_TICKETS__BUCKET", "IR_HTTP__HEADER_BYTES"} <= names
    assert len(names) >= len(Settings.model_fields)

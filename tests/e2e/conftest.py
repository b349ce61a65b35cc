"""End-to-end runs against real processes; their figures are printed at the end of the session."""

from __future__ import annotations

import pytest

FIGURES: dict[str, object] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("Alertmanager end to end")
    for name, value in FIGURES.items():
        terminalreporter.write_line(f"{name:<50} {value}")

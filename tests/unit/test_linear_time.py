"""Every regular expression and text function applied to user input works in linear time.

A property, not a list of past findings: the patterns are collected from every module of
the package (module-level compiled patterns, alone or in tuples, and the normalizer's rule
tables), so a new rule is checked without anyone listing it; a regex written inline in a
call (``re.sub(r"...", ...)``) is refused, so that none escapes the collection. Each gets
adversarial inputs built from its own pieces (``tests/adversarial.py``); the ones that cost
most at 2,000 characters must scale linearly: the time at 10,000 characters over the time at
1,000 stays near 10 (a quadratic pattern gives ~100). Ratios, never absolute times.

How each kind is applied here is how the code applies it, or stricter:
- module-level patterns and the masking rules: ``sub`` over the whole text (a match may
  start anywhere); patterns used only to match a line start are anchored with ``^``;
- header rules: ``match`` at the start (the header stripper only ever matches them at its
  current position; the function-level tests below cover the stripper's loop).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

import incident_responder
from incident_responder.api import schemas
from incident_responder.backends.recommenders import offline
from incident_responder.backends.recommenders.openai_chat.answer import parse_answer
from incident_responder.models import Runbook, RunbookChunk
from incident_responder.pipeline import alert_text, chunking, normalize
from incident_responder.text import terms
from tests.adversarial import GENERIC_UNITS, inputs, pattern_units, scaling, seconds_per_call

# The model's own package is left out (it holds no pattern, and importing its torch
# fallback costs seconds), and so is the entry point (importing it runs the command).
_SKIPPED = ("incident_responder.backends.embedding", "incident_responder.__main__")
MODULES: tuple[ModuleType, ...] = tuple(
    importlib.import_module(info.name)
    for info in pkgutil.walk_packages(incident_responder.__path__, "incident_responder.")
    if not info.name.startswith(_SKIPPED)
)
SCREEN, SMALL, LARGE = 2_000, 1_000, 10_000
WORST = 3  # inputs per target whose scaling is measured (the costliest at SCREEN characters)
LINEAR = 25.0  # bound on time(LARGE) / time(SMALL): 10 is linear, 100 quadratic


def _module_patterns(module: ModuleType) -> Iterator[tuple[str, re.Pattern[str]]]:
    for name, value in vars(module).items():
        values = value if isinstance(value, tuple | list) else (value,)
        for i, item in enumerate(values):
            if isinstance(item, re.Pattern) and isinstance(item.pattern, str):
                suffix = f"[{i}]" if len(values) > 1 else ""
                yield f"{module.__name__.rsplit('.', 1)[1]}.{name}{suffix}", item


def _targets() -> Iterator[tuple[str, re.Pattern[str], str]]:
    seen: set[tuple[str, int]] = set()
    for header in normalize.DEFAULT_HEADERS:
        yield f"header:{header.name}", re.compile(header.pattern, header.flags), "match"
    for rule in normalize.DEFAULT_RULES:
        compiled = re.compile(rule.pattern, rule.flags)
        seen.add((compiled.pattern, compiled.flags))
        yield f"rule:{rule.name}", compiled, "sub"
    for module in MODULES:
        for name, compiled in _module_patterns(module):
            if (compiled.pattern, compiled.flags) not in seen:
                seen.add((compiled.pattern, compiled.flags))
                yield name, compiled, "sub"


TARGETS = list(_targets())


def _applied(compiled: re.Pattern[str], how: str) -> Callable[[str], object]:
    if how == "match":
        return compiled.match
    return lambda text: compiled.sub("", text)


def _worst(fn: Callable[[str], object], units: list[str], *, pairs: int) -> list[str]:
    """The names of the ``WORST`` inputs that cost ``fn`` the most at ``SCREEN`` characters."""
    costs = []
    for name, text in inputs(units, SCREEN, pairs=pairs):
        costs.append((seconds_per_call(fn, text, budget=0.0, rounds=1), name))
    return [name for _, name in sorted(costs, reverse=True)[:WORST]]


def _check(fn: Callable[[str], object], units: list[str], *, pairs: int) -> None:
    small = dict(inputs(units, SMALL, pairs=pairs))
    large = dict(inputs(units, LARGE, pairs=pairs))
    slow = []
    for name in _worst(fn, units, pairs=pairs):
        ratio = scaling(fn, small[name], large[name], bound=LINEAR)
        if ratio > LINEAR:
            slow.append(f"{name}: x{ratio:.0f}")
    assert not slow, f"cost grows faster than the input ({SMALL} -> {LARGE} chars): {slow}"


def test_every_pattern_is_collected() -> None:
    names = {name for name, _, _ in TARGETS}
    assert {"header:logfile", "rule:num", "alert_text._VALUE_TAIL_RE", "markdown._ATX_RE"} <= names
    assert any(name.startswith("alert_text._NOISE_RES[") for name in names)  # tuples too


def test_no_pattern_is_written_inline() -> None:
    """Every pattern is compiled at module level, where the collection above finds it."""
    inline = []
    for path in Path(incident_responder.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "re"
                and node.func.attr != "compile"
                and node.args
                and isinstance(node.args[0], ast.Constant | ast.JoinedStr | ast.BinOp)
            ):
                inline.append(f"{path.name}:{node.lineno}")
    assert not inline, f"compile these patterns at module level: {inline}"


@pytest.mark.parametrize(("name", "compiled", "how"), TARGETS, ids=[t[0] for t in TARGETS])
def test_pattern_cost_is_linear(name: str, compiled: re.Pattern[str], how: str) -> None:
    units = pattern_units(compiled) + list(GENERIC_UNITS)
    _check(_applied(compiled, how), units, pairs=8)


# --------------------------------------------------------------------------- whole functions

_NORMALIZER = normalize.LogNormalizer()
_RECOMMENDER = offline.OfflineRecommender()


def _recommend(text: str) -> object:
    chunk = RunbookChunk(runbook_id="rb", chunk_no=0, heading="Rb > Mitigation", text=text)
    return _RECOMMENDER.recommend(text, [chunk], {"rb": "Rb"})


def _validate_incident(text: str) -> object:
    try:
        return schemas.IncidentIn(service="svc", log=text, title=text[:200])
    except ValueError:
        return None


FUNCTIONS: dict[str, Callable[[str], object]] = {
    "normalize": _NORMALIZER.normalize,
    "strip_header": lambda text: _NORMALIZER.strip_header(" ".join(text.split())),
    "chunk_runbook": lambda text: chunking.chunk_runbook(Runbook(id="rb", title="Rb", content=text)),
    "runbook_title": lambda text: chunking.runbook_title(text, "rb"),
    "parse_log": alert_text.parse_log,
    "query_text": alert_text.query_text,
    "tokenize": terms.tokenize,
    "recommend": _recommend,
    "incident_schema": _validate_incident,
    "llm_answer": parse_answer,
}
# Every piece of every pattern, and shapes that nest or repeat.
ALL_UNITS = list(
    dict.fromkeys(
        [unit for _, compiled, _ in TARGETS for unit in pattern_units(compiled)]
        + list(GENERIC_UNITS)
        + ["[[", "]]", "([", "{[(<", '{"a":', "a=b ", 'a="', "\\\\", "2024-01-02 ", "1.2.3.4 ", "# x "]
    )
)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_cost_is_linear(name: str) -> None:
    _check(FUNCTIONS[name], ALL_UNITS, pairs=4)


def test_the_reported_inputs_scale_linearly() -> None:
    """The inputs of the hardening report, each at 1,000 and 10,000 characters."""
    cases: list[tuple[Callable[[str], object], Callable[[int], str]]] = [
        (FUNCTIONS["chunk_runbook"], lambda n: "# x" + " " * n + "y\n\nbody"),
        (FUNCTIONS["runbook_title"], lambda n: "---\ntitle: x" + " " * n + "y\n---\n"),
        (FUNCTIONS["query_text"], lambda n: "plmoknij" + " " * n + "zplmoknij"),
        (FUNCTIONS["normalize"], lambda n: ("x" + ".log" * n)[:n]),
    ]
    for fn, make in cases:
        assert scaling(fn, make(SMALL), make(LARGE), bound=LINEAR) < LINEAR

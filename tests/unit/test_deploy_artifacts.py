"""The Grafana dashboard and the Prometheus alert rules: well-formed, and only about
metrics that the app really exports."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from prometheus_client.metrics import MetricWrapperBase

from incident_responder.observability.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "incident-responder.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"

SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}
# Labels every scraped series may carry besides its own.
TARGET_LABELS = {"job", "instance"}
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range", "__range_s", "__interval_ms"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool"}
PROMQL_WORDS |= {"offset", "inf", "nan", "Inf", "NaN"}


def exported_series() -> dict[str, set[str]]:
    """Every series name the app's registry can export -> its label names."""
    metrics = Metrics()
    labels = {
        wrapper._name: set(wrapper._labelnames)
        for wrapper in vars(metrics).values()
        if isinstance(wrapper, MetricWrapperBase)
    }
    series: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for suffix in SUFFIXES[family.type]:
            extra = {"le"} if suffix == "_bucket" else set()
            series[family.name + suffix] = labels.get(family.name, set()) | extra | TARGET_LABELS
    return series


SERIES = exported_series()


def test_the_registry_is_read_the_way_the_checks_expect() -> None:
    assert "ir_incidents_total" in SERIES and "ir_incidents" not in SERIES
    assert {"ir_stage_seconds_bucket", "ir_stage_seconds_count", "ir_dlq_depth"} <= SERIES.keys()
    assert SERIES["ir_stage_seconds_bucket"] >= {"stage", "le", "job"}


# ---------------------------------------------------------------- PromQL-ish checks


def _strip_strings(expr: str) -> str:
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)


def check_balanced(expr: str) -> None:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in _strip_strings(expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs:
            assert stack and stack.pop() == pairs[char], f"unbalanced {char!r} in {expr!r}"
    assert not stack, f"unclosed {stack} in {expr!r}"
    assert expr.count('"') % 2 == 0, f"unterminated string in {expr!r}"


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, label names in its matchers) for every ``metric{...}`` and bare metric."""
    text = _strip_strings(expr)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # range and subquery durations
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " 1 ", text)  # Grafana variables
    text = re.sub(r"(?<![\w.])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w])", " ", text)  # numbers
    found: list[tuple[str, set[str]]] = []
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        name, rest = match.group(), text[match.end() :].lstrip()
        if name in PROMQL_WORDS or rest.startswith("("):
            continue  # a keyword or a function call
        if _inside_braces(text, match.start()):
            continue  # a label name
        labels = set()
        if rest.startswith("{"):
            body = rest[1 : rest.index("}")]
            labels = set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", body))
        found.append((name, labels))
    return found


def _inside_braces(text: str, pos: int) -> bool:
    return text.rfind("{", 0, pos) > text.rfind("}", 0, pos)


def check_expr(expr: str) -> set[str]:
    check_balanced(expr)
    used = selectors(expr)
    assert used, f"no metric in {expr!r}"
    for name, labels in used:
        assert name in SERIES, f"{name!r} in {expr!r} is not exported by Metrics()"
        unknown = labels - SERIES[name]
        assert not unknown, f"{name} has no label {sorted(unknown)} (in {expr!r})"
    return {name for name, _ in used}


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (status) (rate(ir_incidents_total{job=~"$job"}[$__rate_interval]))', {"ir_incidents_total"}),
        (
            "histogram_quantile(0.99, sum by (le) (rate(ir_stage_seconds_bucket[5m]))) > 1e-3",
            {"ir_stage_seconds_bucket"},
        ),
        (
            "(sum(ir_dlq_depth) or vector(0)) == 0 unless ir_runbooks_loaded",
            {"ir_dlq_depth", "ir_runbooks_loaded"},
        ),
    ],
)
def test_the_checker_finds_metric_names(expr: str, names: set[str]) -> None:
    assert check_expr(expr) == names


@pytest.mark.parametrize(
    "expr",
    [
        "rate(ir_incidents_total[5m]",  # unbalanced
        'rate(ir_incidents_total{status="new"[5m])',  # crossed brackets
        "rate(ir_incident_total[5m])",  # typo
        "rate(ir_stage_seconds[5m])",  # a histogram has no bare series
        'ir_incidents_total{state="new"}',  # no such label
        "vector(1)",  # no metric at all
    ],
)
def test_the_checker_refuses_bad_expressions(expr: str) -> None:
    with pytest.raises(AssertionError):
        check_expr(expr)


# ---------------------------------------------------------------- Grafana dashboard

DATASOURCE_REF = {
    "type": "object",
    "required": ["type", "uid"],
    "properties": {"type": {"const": "prometheus"}, "uid": {"const": "${datasource}"}},
}
DASHBOARD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels", "templating", "time", "tags", "version"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "schemaVersion": {"const": 39},
        "tags": {"type": "array", "items": {"type": "string"}},
        "time": {"type": "object", "required": ["from", "to"]},
        "templating": {
            "type": "object",
            "required": ["list"],
            "properties": {
                "list": {
                    "type": "array",
                    "items": {"type": "object", "required": ["name", "type"]},
                    "contains": {
                        "type": "object",
                        "required": ["name", "type", "query"],
                        "properties": {
                            "name": {"const": "datasource"},
                            "type": {"const": "datasource"},
                            "query": {"const": "prometheus"},
                        },
                    },
                }
            },
        },
        "panels": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/panel"}},
    },
    "$defs": {
        "panel": {
            "type": "object",
            "required": ["id", "type", "title", "gridPos"],
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "type": {
                    "enum": ["row", "timeseries", "stat", "state-timeline", "gauge", "table", "bargauge"]
                },
                "title": {"type": "string", "minLength": 1},
                "gridPos": {
                    "type": "object",
                    "required": ["h", "w", "x", "y"],
                    "properties": {
                        "h": {"type": "integer", "minimum": 1},
                        "w": {"type": "integer", "minimum": 1, "maximum": 24},
                        "x": {"type": "integer", "minimum": 0, "maximum": 23},
                        "y": {"type": "integer", "minimum": 0},
                    },
                },
                "datasource": DATASOURCE_REF,
                "fieldConfig": {"type": "object", "required": ["defaults", "overrides"]},
                "targets": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["refId", "expr", "datasource"],
                        "properties": {
                            "refId": {"type": "string", "pattern": "^[A-Z]$"},
                            "expr": {"type": "string", "minLength": 1},
                            "legendFormat": {"type": "string"},
                            "datasource": DATASOURCE_REF,
                        },
                    },
                },
            },
            "if": {"properties": {"type": {"const": "row"}}},
            "then": {"required": ["collapsed", "panels"]},
            "else": {
                "required": ["datasource", "targets", "fieldConfig"],
                "properties": {"targets": {"minItems": 1}},
            },
        }
    },
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows keep theirs inside
    return panels


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in all_panels(dashboard) for target in panel.get("targets", [])]


def test_dashboard_matches_the_schema(dashboard: dict[str, Any]) -> None:
    Draft202012Validator.check_schema(DASHBOARD_SCHEMA)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in Draft202012Validator(DASHBOARD_SCHEMA).iter_errors(dashboard)
    ]
    assert not errors, "\n".join(errors)


def test_dashboard_panels_are_unique_and_laid_out(dashboard: dict[str, Any]) -> None:
    panels = all_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        ref_ids = [t["refId"] for t in panel.get("targets", [])]
        assert len(ref_ids) == len(set(ref_ids)), f"refIds repeat in {panel['title']!r}"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']!r} is wider than the grid"

    def cells(p: dict[str, Any]) -> set[tuple[int, int]]:
        g = p["gridPos"]
        return set(itertools.product(range(g["x"], g["x"] + g["w"]), range(g["y"], g["y"] + g["h"])))

    for a, b in itertools.combinations(dashboard["panels"], 2):
        assert not cells(a) & cells(b), f"{a['title']!r} overlaps {b['title']!r}"


def test_dashboard_queries_use_exported_metrics(dashboard: dict[str, Any]) -> None:
    used: set[str] = set()
    for expr in dashboard_exprs(dashboard):
        used |= check_expr(expr)
    required = {
        "ir_incidents_total",
        "ir_stage_seconds_bucket",
        "ir_http_requests_total",
        "ir_backend_calls_total",
        "ir_backend_retries_total",
        "ir_circuit_breaker_state",
        "ir_dlq_depth",
        "ir_rate_limited_total",
        "ir_llm_tokens_total",
        "ir_runbooks_loaded",
    }
    assert required <= used, f"no panel shows {sorted(required - used)}"
    assert any('stage="request"' in e for e in dashboard_exprs(dashboard)), "end-to-end latency panel"
    assert sum("histogram_quantile(0.99" in e for e in dashboard_exprs(dashboard)) >= 2, "p99 panels"


def test_dashboard_variables_are_defined(dashboard: dict[str, Any]) -> None:
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    for expr in dashboard_exprs(dashboard):
        for name in re.findall(r"\$\{?(\w+)", expr):
            assert name in defined | GRAFANA_BUILTINS, f"${name} is not a dashboard variable ({expr!r})"
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        if m := re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", text):
            assert m.group(1) in SERIES and m.group(2) in SERIES[m.group(1)], text
        if variable["type"] == "query":
            assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, variable["name"]


# ---------------------------------------------------------------- Prometheus alert rules

ALERTS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["groups"],
    "additionalProperties": False,
    "properties": {
        "groups": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "rules"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "interval": {"type": "string", "pattern": r"^\d+[smhd]$"},
                    "rules": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/rule"}},
                },
            },
        }
    },
    "$defs": {
        "rule": {
            "type": "object",
            "required": ["alert", "expr", "for", "labels", "annotations"],
            "additionalProperties": False,
            "properties": {
                "alert": {"type": "string", "pattern": "^[A-Z][A-Za-z0-9]+$"},
                "expr": {"type": "string", "minLength": 1},
                "for": {"type": "string", "pattern": r"^\d+[smhd]$"},
                "labels": {
                    "type": "object",
                    "required": ["severity"],
                    "properties": {"severity": {"enum": ["page", "warning", "info"]}},
                },
                "annotations": {
                    "type": "object",
                    "required": ["summary", "description", "runbook_url"],
                    "properties": {
                        "summary": {"type": "string", "minLength": 1},
                        "description": {"type": "string", "minLength": 1},
                        "runbook_url": {"type": "string", "pattern": "^https://"},
                    },
                },
            },
        }
    },
}


@pytest.fixture(scope="module")
def alerts() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return data


def alert_rules(alerts: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in alerts["groups"] for rule in group["rules"]]


def test_alerts_match_the_schema(alerts: dict[str, Any]) -> None:
    Draft202012Validator.check_schema(ALERTS_SCHEMA)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in Draft202012Validator(ALERTS_SCHEMA).iter_errors(alerts)
    ]
    assert not errors, "\n".join(errors)
    names = [rule["alert"] for rule in alert_rules(alerts)]
    assert len(names) == len(set(names)), "alert names must be unique"


def test_alerts_use_exported_metrics(alerts: dict[str, Any]) -> None:
    by_alert = {rule["alert"]: check_expr(rule["expr"]) for rule in alert_rules(alerts)}
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules(alerts)}

    def covered(metric: str, fragment: str) -> bool:
        return any(metric in used and fragment in exprs[name] for name, used in by_alert.items())

    assert covered("ir_http_requests_total", 'code=~"5.."'), "5xx error rate"
    assert covered("ir_stage_seconds_bucket", "histogram_quantile(0.99"), "p99 latency"
    assert covered("ir_dlq_depth", "delta("), "dead-letter queue growing"
    assert covered("ir_dlq_depth", "> 0"), "dead-letter queue not empty"
    assert covered("ir_circuit_breaker_state", "== 2"), "circuit open"
    assert covered("ir_backend_calls_total", 'outcome!="ok"'), "LLM fallback rate"
    assert covered("ir_incidents_total", "ir_http_requests_total"), "requests but no incidents"


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(
            "promtool is not on PATH (Debian: apt-get install prometheus); the Python checks still ran"
        )
    return path


def test_promtool_accepts_the_alert_rules() -> None:
    result = subprocess.run(
        [_promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_parses_the_dashboard_queries(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """Each panel query as a recording rule, Grafana variables replaced by sample values."""
    promtool = _promtool()
    values = {"__rate_interval": "5m", "__interval": "1m", "__range": "6h", "job": ".*"}
    rules = []
    for i, expr in enumerate(dashboard_exprs(dashboard)):
        concrete = re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), "1"), expr)
        rules.append({"record": f"dashboard:query_{i}", "expr": concrete})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in {"job": "ir", **labels}.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


# (what happens, input series, alert, eval time, labels of the alerts expected then)
ALERT_CASES: list[tuple[str, list[dict[str, str]], str, str, list[dict[str, str]]]] = [
    (
        "half the requests fail",
        [
            _series("ir_http_requests_total", "0+10x40", route="/v1/incidents", code="500"),
            _series("ir_http_requests_total", "0+10x40", route="/v1/incidents", code="201"),
        ],
        "IncidentResponderHigh5xxRate",
        "20m",
        [{"job": "ir", "severity": "page"}],
    ),
    (
        "no 5xx",
        [_series("ir_http_requests_total", "0+10x40", route="/v1/incidents", code="201")],
        "IncidentResponderHigh5xxRate",
        "30m",
        [],
    ),
    (
        "requests take 5-10 s",
        [
            _series("ir_stage_seconds_bucket", "0x40", stage="request", le="5.0"),
            _series("ir_stage_seconds_bucket", "0+10x40", stage="request", le="10.0"),
            _series("ir_stage_seconds_bucket", "0+10x40", stage="request", le="+Inf"),
        ],
        "IncidentResponderHighLatencyP99",
        "20m",
        [{"job": "ir", "severity": "warning"}],
    ),
    (
        "reports stay queued",
        [_series("ir_dlq_depth", "0 3x40")],
        "IncidentResponderDeadLettersWaiting",
        "15m",
        [{"job": "ir", "severity": "warning"}],
    ),
    (
        "a queue that stays the same is not growing",
        [_series("ir_dlq_depth", "3x40")],
        "IncidentResponderDeadLettersGrowing",
        "30m",
        [],
    ),
    (
        "the queue grows",
        [_series("ir_dlq_depth", "0+1x40")],
        "IncidentResponderDeadLettersGrowing",
        "25m",
        [{"job": "ir", "severity": "page"}],
    ),
    (
        "the vector index circuit is open",
        [_series("ir_circuit_breaker_state", "2x10", backend="vector:pinecone")],
        "IncidentResponderCircuitOpen",
        "5m",
        [{"job": "ir", "backend": "vector:pinecone", "severity": "page"}],
    ),
    (
        "an open LLM circuit only warns",
        [_series("ir_circuit_breaker_state", "2x10", backend="llm:openai")],
        "IncidentResponderCircuitOpen",
        "8m",
        [],
    ),
    (
        "half the LLM calls fail",
        [
            _series(
                "ir_backend_calls_total", "0+5x40", backend="llm:openai", operation="recommend", outcome="ok"
            ),
            _series(
                "ir_backend_calls_total",
                "0+5x40",
                backend="llm:openai",
                operation="recommend",
                outcome="backend_unavailable",
            ),
        ],
        "IncidentResponderLLMFallbackRate",
        "30m",
        [{"job": "ir", "severity": "warning"}],
    ),
    (
        "requests arrive, no incident counted",
        [_series("ir_http_requests_total", "0+10x40", route="/v1/incidents", code="201")],
        "IncidentResponderNoIncidentsProcessed",
        "35m",
        [{"job": "ir", "severity": "page"}],
    ),
    (
        "requests arrive and incidents are counted",
        [
            _series("ir_http_requests_total", "0+10x40", route="/v1/incidents", code="201"),
            _series("ir_incidents_total", "0+10x40", status="new"),
        ],
        "IncidentResponderNoIncidentsProcessed",
        "35m",
        [],
    ),
]


def test_promtool_alerts_fire_when_they_should(alerts: dict[str, Any], tmp_path: Path) -> None:
    """promtool's rule unit tests, on the rules without their annotations (those are text)."""
    promtool = _promtool()
    bare = {
        "groups": [
            {**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
            for g in alerts["groups"]
        ]
    }
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(bare), encoding="utf-8")
    tests = [
        {
            "name": what,
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                {
                    "eval_time": at,
                    "alertname": alert,
                    "exp_alerts": [{"exp_labels": labels} for labels in expected],
                }
            ],
        }
        for what, series, alert, at, expected in ALERT_CASES
    ]
    spec = tmp_path / "alerts-test.yml"
    spec.write_text(
        yaml.safe_dump({"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}),
        encoding="utf-8",
    )
    result = subprocess.run(
        [promtool, "test", "rules", str(spec)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr

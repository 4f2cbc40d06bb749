"""deploy/prometheus's alert rules and deploy/grafana's dashboard: valid for promtool, their unit
tests pass, and every metric and label they name is one the code exports, so neither can drift
from bridge/metrics.py and bridge/service/metrics.py unnoticed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from bridge import metrics
from bridge.service.metrics import ServiceMetrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "skbridge.json"

# Series Prometheus makes itself, not the bridge.
PROMETHEUS_OWN = {"up"}
# Labels the scrape adds to every series.
TARGET_LABELS = {"job", "instance"}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "gauge": ("",), "summary": ("", "_count", "_sum", "_created"), "info": ("_info",)}

NAME = re.compile(r"\b((?:skbridge|process)_[a-z0-9_]+)\b")
SELECTOR = re.compile(r"\b((?:skbridge|process)_[a-z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (.ci/run does)")
    return found


def _registries() -> list[CollectorRegistry]:
    return [metrics.REGISTRY, ServiceMetrics().registry]


def exported() -> dict[str, tuple[set[str], dict[str, set[str]]]]:
    """Every series name the bridge exports -> (its label names, the label values seen so far)."""
    found: dict[str, tuple[set[str], dict[str, set[str]]]] = {}
    for registry in _registries():
        for family in registry.collect():
            labels: set[str] = set()
            values: dict[str, set[str]] = {}
            for sample in family.samples:
                for key, value in sample.labels.items():
                    if key != "le":
                        labels.add(key)
                        values.setdefault(key, set()).add(value)
            # Labelled metrics without a child yet have no sample: take the names from the metric.
            collector = registry._names_to_collectors.get(family.name) or \
                registry._names_to_collectors.get(f"{family.name}_total")
            labels |= set(getattr(collector, "_labelnames", ()))
            for suffix in SUFFIXES[family.type]:
                found[family.name + suffix] = (labels, values)
    return found


def _expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every alert rule and dashboard target."""
    found = []
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            found.append((f"alert {rule['alert']}", rule["expr"]))
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r}", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found.append((f"variable {variable['name']}", variable["definition"]))
    return found


def test_promtool_accepts_the_rules() -> None:
    done = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_rules_unit_tests_pass() -> None:
    done = subprocess.run([_promtool(), "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_of_the_rules_is_unit_tested() -> None:
    alerts = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}
    tested = {check["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for check in case["alert_rule_test"] if check["exp_alerts"]}
    assert alerts == tested, f"alerts without a firing test: {sorted(alerts - tested)}"


def test_the_dashboards_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool has no query checker: the dashboard's queries go through it as recording rules."""
    rules = []
    for number, (_where, expr) in enumerate(_expressions()):
        if expr.startswith("label_values("):
            continue  # Grafana's own function around a selector, checked by the names test
        promql = re.sub(r"\$\w+", ".*", expr)
        rules.append({"record": f"skbridge:dashboard_check_{number}", "expr": promql})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([_promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_rules_and_dashboard_name_only_exported_metrics_and_labels() -> None:
    series = exported()
    assert "skbridge_drop_files_rejected_total" in series and "skbridge_api_requests_total" in series
    problems = []
    for where, expr in _expressions():
        names = set(NAME.findall(expr))
        if not names and not any(re.search(rf"\b{own}\b", expr) for own in PROMETHEUS_OWN):
            problems.append(f"{where}: names no metric of the bridge: {expr}")
        problems += [f"{where}: {name} is not exported" for name in sorted(names) if name not in series]
        for name, matchers in SELECTOR.findall(expr):
            if name not in series:
                continue
            labels, values = series[name]
            for label, op, value in MATCHER.findall(matchers):
                if label in TARGET_LABELS:
                    continue
                if label not in labels:
                    problems.append(f"{where}: {name} has no label {label!r}")
                elif label in values and op in ("=", "=~", "!=") and re.fullmatch(r"[a-z_|]+", value):
                    unknown = set(value.split("|")) - values[label]
                    if unknown:
                        problems.append(f"{where}: {name}{{{label}}} never takes {sorted(unknown)}")
    assert not problems, "\n".join(problems)


def test_the_drift_check_catches_a_renamed_metric() -> None:
    """The check above must be able to fail: a name the code does not export is reported."""
    series = exported()
    assert "skbridge_drop_files_rejected_total" in series
    assert "skbridge_drop_files_refused_total" not in series
    labels, values = series["skbridge_prolog_outcomes_total"]
    assert "outcome" in labels and "ready" in values["outcome"] and "exploded" not in values["outcome"]

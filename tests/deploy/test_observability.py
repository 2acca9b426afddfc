"""deploy/observability against the code: the Grafana dashboards are valid JSON with unique panel ids and a
Prometheus data-source variable, the alert rules are a valid rule file with a severity and a summary on
each, every PromQL expression parses (promql_parser, Prometheus' own grammar), every metric either selects
is one the services register (tests/deploy/metric_names.py), and the alerts the deployment promises exist.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from tests.deploy.metric_names import metric_literals, registered_metric_names

REPO = Path(__file__).resolve().parents[2]
OBSERVABILITY = REPO / "deploy" / "observability"
DASHBOARDS = OBSERVABILITY / "dashboards"
ALERTS = OBSERVABILITY / "alerts.yml"
EXPECTED_DASHBOARDS = {"factory-overview.json", "swapper.json", "publisher.json", "analytics.json"}

# series Prometheus makes itself for every target (not any service's metric)
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                        "scrape_samples_post_metric_relabeling", "scrape_series_added"}
# Grafana's variables, replaced by a plausible value before parsing (the longest names first)
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m", "${__rate_interval}": "5m", "$__interval_ms": "15000", "$__interval": "1m",
    "${__interval}": "1m", "$__range_s": "3600", "$__range_ms": "3600000", "$__range": "1h", "${__range}": "1h",
}
CONSENT_TOPIC = "reelfab.consent.changed.v1"
SEVERITIES = {"critical", "warning", "info"}


# ---------------------------------------------------------------------------------------------------
# PromQL


@dataclass
class Selected:
    """What an expression reads: metric names, each selector's matchers, the functions it calls."""

    metrics: set[str] = field(default_factory=set)
    matchers: list[tuple[str | None, dict[str, list[tuple[str, str]]]]] = field(default_factory=list)
    functions: set[str] = field(default_factory=set)


def substitute_grafana(expr: str) -> str:
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    leftover = re.findall(r"\$\{?\w+\}?", expr)
    assert not leftover, f"unknown Grafana variables {leftover} in {expr!r}"
    return expr


def parse(expr: str) -> Any:
    try:
        return promql_parser.parse(expr)
    except Exception as exc:  # the parser raises ValueError (and friends) with the grammar's message
        raise AssertionError(f"does not parse as PromQL: {expr!r}: {exc}") from exc


def selected(expr: str) -> Selected:
    """Parse ``expr`` and walk its AST: every vector selector (a matrix selector or subquery holds one)."""
    found = Selected()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            labels: dict[str, list[tuple[str, str]]] = {}
            for m in node.matchers.matchers:
                labels.setdefault(m.name, []).append((str(m.op).rsplit(".", 1)[-1], m.value))
            name = node.name
            if not name:  # {__name__="x"}: the name given as a matcher
                name = next((v for op, v in labels.get("__name__", []) if op == "Equal"), None)
            assert name, f"a selector without a metric name (or with a regex one) in {expr!r}"
            found.metrics.add(name)
            found.matchers.append((name, labels))
        elif isinstance(node, promql_parser.Call):
            found.functions.add(node.func.name)

    promql_parser.walk(parse(expr), visit)
    return found


def selector_matches(labels: dict[str, list[tuple[str, str]]], label: str, value: str) -> bool:
    """Whether a selector's matchers on ``label`` accept ``value`` (no matcher on it: any value)."""
    for op, want in labels.get(label, []):
        ok = {"Equal": value == want, "NotEqual": value != want,
              "Re": re.fullmatch(want, value) is not None, "NotRe": re.fullmatch(want, value) is None}[op]
        if not ok:
            return False
    return True


# ---------------------------------------------------------------------------------------------------
# the files


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


@cache
def load_dashboard(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return board


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels") or [])


def dashboard_exprs(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target, with Grafana's variables substituted."""
    for panel in all_panels(board.get("panels", [])):
        for target in panel.get("targets") or []:
            if target.get("expr"):
                yield f"panel {panel.get('id')} {panel.get('title')!r} {target.get('refId')}", \
                    substitute_grafana(target["expr"])


@cache
def alert_rules() -> tuple[dict[str, Any], ...]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    assert isinstance(document, dict) and isinstance(document.get("groups"), list) and document["groups"], \
        "alerts.yml: expected a rule file with a non-empty `groups:` list"
    rules: list[dict[str, Any]] = []
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit", "query_offset", "labels"}, group.get("name")
        assert group.get("name") and group.get("rules"), f"alerts.yml: a group without a name or rules: {group}"
        rules.extend(group["rules"])
    return tuple(rules)


def alerts() -> list[dict[str, Any]]:
    return [r for r in alert_rules() if "alert" in r]


# ---------------------------------------------------------------------------------------------------
# dashboards


def test_the_dashboards_the_deployment_promises_exist() -> None:
    assert EXPECTED_DASHBOARDS <= {p.name for p in dashboard_files()}


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_dashboard_is_valid(path: Path) -> None:
    board = load_dashboard(path)
    problems: list[str] = []
    if not board.get("uid") or not board.get("title"):
        problems.append("no uid or title")
    if not isinstance(board.get("schemaVersion"), int) or board["schemaVersion"] < 36:
        problems.append(f"schemaVersion {board.get('schemaVersion')!r}: expected 36 or later")
    variables = {v.get("name"): v for v in board.get("templating", {}).get("list", [])}
    datasource = variables.get("datasource")
    if not datasource or datasource.get("type") != "datasource" or datasource.get("query") != "prometheus":
        problems.append("no `datasource` templating variable of type datasource for prometheus")
    panels = list(all_panels(board.get("panels", [])))
    if not panels:
        problems.append("no panels")
    ids = [p.get("id") for p in panels]
    duplicates = sorted({i for i in ids if ids.count(i) > 1}, key=str)
    if duplicates or None in ids:
        problems.append(f"panel ids missing or repeated: {duplicates or 'missing'}")
    for panel in panels:
        if panel.get("type") == "row":
            continue
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        if not panel.get("targets"):
            problems.append(f"{where}: no targets")
        for ds in [panel.get("datasource"), *(t.get("datasource") for t in panel.get("targets") or [])]:
            if ds is not None and (ds.get("type") != "prometheus" or ds.get("uid") != "${datasource}"):
                problems.append(f"{where}: data source {ds} is not the ${{datasource}} variable")
        refs = [t.get("refId") for t in panel.get("targets") or []]
        if len(refs) != len(set(refs)) or None in refs:
            problems.append(f"{where}: refIds missing or repeated: {refs}")
    for where, expr in dashboard_exprs(board):
        try:
            selected(expr)
        except AssertionError as exc:
            problems.append(f"{where}: {exc}")
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


def test_dashboard_uids_are_unique() -> None:
    uids = [load_dashboard(p).get("uid") for p in dashboard_files()]
    assert len(uids) == len(set(uids)), uids


# ---------------------------------------------------------------------------------------------------
# alerts


def test_alert_rules_are_valid() -> None:
    problems: list[str] = []
    names: list[str] = []
    for rule in alert_rules():
        name = rule.get("alert") or rule.get("record")
        if not name or "expr" not in rule:
            problems.append(f"a rule without a name or an expr: {rule}")
            continue
        try:
            selected(str(rule["expr"]))
        except AssertionError as exc:
            problems.append(f"{name}: {exc}")
        if "record" in rule:
            continue
        names.append(name)
        if not re.fullmatch(r"[A-Z][A-Za-z0-9]*", name):
            problems.append(f"{name}: alert names are CamelCase")
        if "for" not in rule:
            problems.append(f"{name}: no `for`")
        elif not re.fullmatch(r"(\d+(ms|[smhdwy]))+", str(rule["for"])):
            problems.append(f"{name}: `for: {rule['for']}` is not a duration")
        if (rule.get("labels") or {}).get("severity") not in SEVERITIES:
            problems.append(f"{name}: labels.severity must be one of {sorted(SEVERITIES)}")
        annotations = rule.get("annotations") or {}
        for key in ("summary", "description"):
            if not str(annotations.get(key) or "").strip():
                problems.append(f"{name}: no annotations.{key}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        problems.append(f"alert names repeated: {duplicates}")
    assert names, "alerts.yml holds no alerts"
    assert not problems, "alerts.yml:\n  " + "\n  ".join(problems)


def _lag_on(found: Selected, topic: str | None = None, group: str | None = None) -> bool:
    for name, labels in found.matchers:
        if name != "reelfab_consumer_lag_messages":
            continue
        if topic is not None and not selector_matches(labels, "topic", topic):
            continue
        if topic is not None and "topic" not in labels:
            continue  # a consent-view alert names the consent topic
        if group is not None and not (selector_matches(labels, "group", group) and "group" in labels):
            continue
        if group is not None and selector_matches(labels, "group", "planner"):  # only the consent views
            continue
        return True
    return False


# what each promised alert must read, checked on its parsed expression
REQUIRED_ALERTS: dict[str, Any] = {
    "dead letters (DLQ rate above zero)": lambda f: "reelfab_dlq_total" in f.metrics,
    "consumer lag growing": lambda f: _lag_on(f) and bool(f.functions & {"deriv", "delta", "increase", "rate",
                                                                          "predict_linear", "idelta"}),
    "a consent view behind the consent topic": lambda f: _lag_on(f, CONSENT_TOPIC, "planner.consent-view"),
    "token refresh failing": lambda f: "reelfab_publisher_accounts_without_valid_token" in f.metrics,
    "GPU temperature high": lambda f: "reelfab_gpu_temperature_celsius" in f.metrics,
    "a dependency down": lambda f: "reelfab_dependency_up" in f.metrics,
    "the oldest unfinished job too old": lambda f: "reelfab_planner_oldest_unfinished_job_seconds" in f.metrics,
}


def missing_alert_topics(rules: list[dict[str, Any]]) -> list[str]:
    parsed = [selected(str(r["expr"])) for r in rules if "alert" in r]
    return [topic for topic, covers in REQUIRED_ALERTS.items() if not any(covers(f) for f in parsed)]


def test_every_promised_alert_exists() -> None:
    missing = missing_alert_topics(alerts())
    assert not missing, f"alerts.yml has no alert for: {missing}"


def test_a_missing_alert_topic_is_noticed() -> None:
    rules = alerts()
    for topic, covers in REQUIRED_ALERTS.items():
        without = [r for r in rules if not covers(selected(str(r["expr"])))]
        assert topic in missing_alert_topics(without), topic
    wrong_topic = [{"alert": "X", "expr": 'reelfab_consumer_lag_messages{topic="reelfab.swap.requested.v1"} > 0'}]
    assert "a consent view behind the consent topic" in missing_alert_topics(wrong_topic)


# ---------------------------------------------------------------------------------------------------
# metric names against the code


def used_metrics() -> dict[str, set[str]]:
    """metric name -> the files (and alerts or panels) that select it."""
    used: dict[str, set[str]] = {}
    for path in dashboard_files():
        for where, expr in dashboard_exprs(load_dashboard(path)):
            for name in selected(expr).metrics:
                used.setdefault(name, set()).add(f"{path.name} {where}")
    for rule in alert_rules():
        for name in selected(str(rule["expr"])).metrics:
            used.setdefault(name, set()).add(f"alerts.yml {rule.get('alert') or rule.get('record')}")
    return used


def unknown_metrics(used: dict[str, set[str]], known: set[str]) -> list[str]:
    return [f"{name} (in {', '.join(sorted(where))})" for name, where in sorted(used.items())
            if name not in known and name not in PROMETHEUS_SYNTHETIC]


def test_every_metric_the_dashboards_and_alerts_select_is_registered() -> None:
    unknown = unknown_metrics(used_metrics(), registered_metric_names())
    assert not unknown, "metrics no service registers:\n  " + "\n  ".join(unknown)


def test_an_unregistered_metric_is_reported() -> None:
    used = {"reelfab_swap_jobs_total": {"a"}, "reelfab_swap_jobs": {"b.json panel 1"}, "up": {"c"}}
    assert unknown_metrics(used, registered_metric_names()) == ["reelfab_swap_jobs (in b.json panel 1)"]


def test_the_registry_holds_every_metric_the_sources_define() -> None:
    """The module scan in metric_names.py misses nothing: each literal metric name of a constructor is
    registered (under the name Prometheus exposes)."""
    known = registered_metric_names()
    missing = [f"{name} ({path.relative_to(REPO)})" for name, path in sorted(metric_literals().items())
               if not {name, f"{name}_total", f"{name}_bucket", f"{name}_info"} & known]
    assert not missing, "defined in the sources but not in the registry:\n  " + "\n  ".join(missing)
    assert {"reelfab_gpu_utilization_ratio", "reelfab_gpu_memory_used_bytes",
            "reelfab_gpu_temperature_celsius"} <= known  # NvmlCollector, collected against the fake NVML
    assert {"reelfab_stage_seconds_bucket", "reelfab_stage_seconds_count", "reelfab_dlq_total"} <= known
    assert "reelfab_dlq" not in known  # a counter is exposed as _total only


def test_grafana_variables_are_substituted_before_parsing() -> None:
    assert substitute_grafana("rate(x[$__rate_interval]) + increase(y[$__range])") == \
        "rate(x[5m]) + increase(y[1h])"
    with pytest.raises(AssertionError):
        substitute_grafana("rate(x[$window])")
    with pytest.raises(AssertionError):
        selected("sum(rate(x[5m])")

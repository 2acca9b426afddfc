"""deploy/observability against the code: the Grafana dashboards are valid JSON with unique panel ids and a
Prometheus data-source variable, the alert rules are a valid rule file with a severity and a summary on
each, every PromQL expression parses (promql_parser, Prometheus' own grammar), every metric either selects
is one the services register (tests/deploy/metric_names.py), and the alerts the deployment promises exist.

Each expression is also checked against what the code exports (its type and labels, from the registry):
rate()/irate()/increase() only of counters; histogram_quantile() only of a rate of *_bucket series that
keeps `le`; every label a matcher, a by()/without(), an on()/ignoring() or an alert's `$labels.x` names is
one the series has there; and gauges every replica exports with the same value (database counts) or a
consent view's lag (one group per replica) are never summed across replicas.
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

from tests.deploy.metric_names import Series, metric_literals, registered_metric_names, registered_series

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

# labels Prometheus adds to every scraped series, on compose and on Kubernetes alike. The other target
# labels differ by deployment (compose_service on compose; namespace, pod, container, endpoint and a
# `service` on Kubernetes, where honorLabels keeps a metric's own `service`): a query using them would work
# on one deployment only.
TARGET_LABELS = frozenset({"job", "instance"})
# counter-only functions: on a gauge they turn every fall into a "reset" and report nonsense
COUNTER_FUNCTIONS = {"rate", "irate", "increase"}
# gauges the code sets from a database count or age, the same value from every replica (the publisher's
# worker.gauges(), the planner's ledger metrics, analytics' tracked posts): summed, they double with two
# replicas. Aggregate them with max (or min).
REPLICATED_GAUGES = frozenset({
    "reelfab_publisher_review_jobs", "reelfab_publisher_review_oldest_waiting_seconds",
    "reelfab_publisher_posts_stalled", "reelfab_publisher_accounts_without_valid_token",
    "reelfab_publisher_takedown_backlog",
    "reelfab_planner_jobs", "reelfab_planner_oldest_unfinished_job_seconds",
    "reelfab_analytics_posts_tracked", "reelfab_analytics_posts_unattributed",
})
LAG = "reelfab_consumer_lag_messages"
CONSENT_VIEW_GROUP = "publisher.consent-view"  # what a consent view's group label looks like


# ---------------------------------------------------------------------------------------------------
# PromQL


@dataclass
class Selected:
    """What an expression reads: metric names, each selector's matchers, the functions it calls."""

    metrics: set[str] = field(default_factory=set)
    matchers: list[tuple[str | None, dict[str, list[tuple[str, str]]]]] = field(default_factory=list)
    functions: set[str] = field(default_factory=set)
    # metrics read as `x unless x offset W`: the series new in the window (a labelled counter's first
    # sample is already 1, so increase() misses its first increment)
    new_series: set[str] = field(default_factory=set)


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
        elif isinstance(node, promql_parser.BinaryExpr) and str(node.op) == "unless":
            now = {_selector_name(v) for v in _selectors(node.lhs) if v.offset is None}
            before = {_selector_name(v) for v in _selectors(node.rhs) if v.offset is not None}
            found.new_series.update(now & before)

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
    "dead letters, the first one of a series too": lambda f: "reelfab_dlq_total" in f.new_series,
    "a post made despite a withdrawn consent, the first one too":
        lambda f: "reelfab_publisher_posted_despite_withdrawal_total" in f.new_series,
    "swap jobs failing, the first one of an outcome too": lambda f: "reelfab_swap_jobs_total" in f.new_series,
    "publisher failures, the first one of a reason too":
        lambda f: "reelfab_publisher_failures_total" in f.new_series,
    "a video waiting for review too long": lambda f: "reelfab_publisher_review_oldest_waiting_seconds" in f.metrics,
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
    rate_only = [{"alert": "X", "expr": "sum by (service, topic, reason) (rate(reelfab_dlq_total[5m])) > 0"},
                 {"alert": "Y", "expr": "reelfab_dlq_total unless reelfab_dlq_total"}]
    assert "dead letters, the first one of a series too" in missing_alert_topics(rate_only)


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


# ---------------------------------------------------------------------------------------------------
# what each expression computes: types, labels, aggregation across replicas


def _children(node: Any) -> list[Any]:
    if isinstance(node, promql_parser.MatrixSelector):
        return [node.vector_selector]
    if isinstance(node, promql_parser.Call):
        return list(node.args)
    if isinstance(node, promql_parser.AggregateExpr):
        return [node.expr] + ([node.param] if node.param is not None else [])
    if isinstance(node, promql_parser.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, (promql_parser.ParenExpr, promql_parser.UnaryExpr, promql_parser.SubqueryExpr)):
        return [node.expr]
    return []


def _unparen(node: Any) -> Any:
    while isinstance(node, promql_parser.ParenExpr):
        node = node.expr
    return node


def _selectors(node: Any, through_aggregations: bool = True) -> Iterator[Any]:
    """The vector selectors under ``node`` (not those below a nested aggregation, if so asked)."""
    if isinstance(node, promql_parser.VectorSelector):
        yield node
        return
    if not through_aggregations and isinstance(_unparen(node), promql_parser.AggregateExpr):
        return
    for child in _children(node):
        yield from _selectors(child, through_aggregations)


def _selector_name(node: Any) -> str:
    if node.name:
        return str(node.name)
    return next((m.value for m in node.matchers.matchers if m.name == "__name__"), "")


def _selector_labels(node: Any) -> dict[str, list[tuple[str, str]]]:
    labels: dict[str, list[tuple[str, str]]] = {}
    for m in node.matchers.matchers:
        labels.setdefault(m.name, []).append((str(m.op).rsplit(".", 1)[-1], m.value))
    return labels


def _string(node: Any) -> str:
    return str(_unparen(node).val)


class Checker:
    """Walks one parsed expression, collecting problems; ``labels(node)`` is the label names of the
    node's result (None: a scalar or a string)."""

    def __init__(self, series: dict[str, Series]) -> None:
        self.series = series
        self.problems: list[str] = []

    def check(self, expr: str) -> frozenset[str] | None:
        return self.labels(parse(expr))

    def _available(self, name: str) -> frozenset[str] | None:
        found = self.series.get(name)
        if found is not None:
            return found.labels | TARGET_LABELS
        if name in PROMETHEUS_SYNTHETIC:
            return TARGET_LABELS
        return None  # an unknown metric: reported by test_every_metric_..._is_registered

    def labels(self, node: Any) -> frozenset[str] | None:
        node = _unparen(node)
        if isinstance(node, (promql_parser.NumberLiteral, promql_parser.StringLiteral)):
            return None
        if isinstance(node, (promql_parser.UnaryExpr, promql_parser.SubqueryExpr)):
            return self.labels(node.expr)
        if isinstance(node, promql_parser.MatrixSelector):
            return self.labels(node.vector_selector)
        if isinstance(node, promql_parser.VectorSelector):
            return self._selector(node)
        if isinstance(node, promql_parser.Call):
            return self._call(node)
        if isinstance(node, promql_parser.AggregateExpr):
            return self._aggregate(node)
        if isinstance(node, promql_parser.BinaryExpr):
            return self._binary(node)
        raise AssertionError(f"unexpected PromQL node {type(node).__name__}: {node}")

    def _selector(self, node: Any) -> frozenset[str]:
        name = _selector_name(node)
        available = self._available(name)
        names = {m.name for m in node.matchers.matchers} - {"__name__"}
        if available is None:
            return frozenset(names) | TARGET_LABELS
        for label in sorted(names - available):
            self.problems.append(f"{name} has no label {label!r} (it has {sorted(available)})")
        return available

    def _call(self, node: Any) -> frozenset[str] | None:
        name = node.func.name
        args = [self.labels(a) for a in node.args]
        if name in COUNTER_FUNCTIONS:
            for selector in _selectors(node.args[0]):
                found = self.series.get(_selector_name(selector))
                kind = found.type if found else "gauge"
                if not (found and found.monotonic):
                    self.problems.append(f"{name}() of {_selector_name(selector)}, a {kind} "
                                         "(rate, irate and increase are for counters)")
        if name == "histogram_quantile":
            self._histogram(node.args[1])
        if node.func.return_type == promql_parser.ValueType.Scalar:
            return None
        vectors = [a for a in args if a is not None]
        base = vectors[0] if vectors else frozenset()
        if name == "histogram_quantile":
            return base - {"le"}
        if name in {"label_replace", "label_join"}:
            sources = [_string(node.args[3])] if name == "label_replace" else [_string(a) for a in node.args[3:]]
            for label in sources:
                if label and label not in base:
                    self.problems.append(f"{name}() reads label {label!r}, which its argument lacks")
            return base | {_string(node.args[1])}
        if name in {"vector", "absent", "absent_over_time"}:
            return frozenset()
        return base

    def _histogram(self, arg: Any) -> None:
        """histogram_quantile's vector: sum by (le, ...) (rate|increase|irate of a *_bucket series), or the
        rate itself."""
        inner = _unparen(arg)
        if isinstance(inner, promql_parser.AggregateExpr):
            mod = inner.modifier
            keeps_le = mod is not None and (
                "le" in mod.labels if mod.type == promql_parser.AggModifierType.By else "le" not in mod.labels)
            if str(inner.op) != "sum" or not keeps_le:
                self.problems.append(f"histogram_quantile() over {inner.op} not grouped by le: {inner}")
                return
            inner = _unparen(inner.expr)
        ok = isinstance(inner, promql_parser.Call) and inner.func.name in COUNTER_FUNCTIONS \
            and isinstance(_unparen(inner.args[0]), promql_parser.MatrixSelector)
        if ok:
            name = _selector_name(_unparen(inner.args[0]).vector_selector)
            found = self.series.get(name)
            ok = name.endswith("_bucket") and found is not None and "le" in found.labels
        if not ok:
            self.problems.append(f"histogram_quantile() of {inner}: expected the rate or increase of a *_bucket "
                                 "series, summed by (le, ...) or not aggregated")

    def _aggregate(self, node: Any) -> frozenset[str] | None:
        inner = self.labels(node.expr)
        if node.param is not None:
            self.labels(node.param)
        inner = inner if inner is not None else frozenset()
        op, mod = str(node.op), node.modifier
        grouping = frozenset(mod.labels) if mod is not None else frozenset()
        by = mod is not None and mod.type == promql_parser.AggModifierType.By
        for label in sorted(grouping - inner):
            self.problems.append(f"{op} {'by' if by else 'without'} ({label}): the expression has no such label "
                                 f"(it has {sorted(inner)})")
        if op in {"topk", "bottomk", "limitk", "limit_ratio"}:
            result = inner
        elif mod is None:
            result = frozenset()
        else:
            result = grouping if by else inner - grouping
        if op == "count_values":
            result |= {_string(node.param)}
        if op == "sum" and "instance" not in result:
            for selector in _selectors(node.expr, through_aggregations=False):
                name = _selector_name(selector)
                if name in REPLICATED_GAUGES:
                    self.problems.append(f"sum over {name}: every replica exports the same count; use max")
                elif name == LAG and (selector_matches(_selector_labels(selector), "group", CONSENT_VIEW_GROUP)):
                    self.problems.append(f"sum over {LAG} of consent views (one group per replica, each "
                                         "reading every partition): use max, or leave consent-view groups out")
        return result

    def _binary(self, node: Any) -> frozenset[str] | None:
        lhs, rhs = self.labels(node.lhs), self.labels(node.rhs)
        if lhs is None or rhs is None:
            return rhs if lhs is None else lhs
        op, mod = str(node.op), node.modifier
        matching = mod.matching if mod is not None else None
        on = matching is not None and matching.type == promql_parser.LabelModifierType.Include
        names = frozenset(matching.labels) if matching is not None else frozenset()
        for label in sorted(names - (lhs & rhs if on else lhs | rhs)):
            self.problems.append(f"{'on' if on else 'ignoring'} ({label}): not a label of "
                                 f"{'both sides' if on else 'either side'} of {op}")
        card = mod.card if mod is not None else None
        include = frozenset(mod.group_labels or []) if mod is not None else frozenset()
        if card == promql_parser.VectorMatchCardinality.ManyToOne:
            for label in sorted(include - rhs):
                self.problems.append(f"group_left ({label}): the right side has no such label")
            return lhs | include
        if card == promql_parser.VectorMatchCardinality.OneToMany:
            for label in sorted(include - lhs):
                self.problems.append(f"group_right ({label}): the left side has no such label")
            return rhs | include
        if op == "or":
            return lhs | rhs
        if op in {"and", "unless"}:
            return lhs
        if matching is not None:
            return lhs & names if on else lhs - names
        return lhs


def expression_problems(expr: str, series: dict[str, Series] | None = None) -> list[str]:
    checker = Checker(registered_series() if series is None else series)
    checker.check(expr)
    return checker.problems


def all_exprs() -> Iterator[tuple[str, str]]:
    for path in dashboard_files():
        for where, expr in dashboard_exprs(load_dashboard(path)):
            yield f"{path.name} {where}", expr
    for rule in alert_rules():
        yield f"alerts.yml {rule.get('alert') or rule.get('record')}", str(rule["expr"])


def test_every_expression_fits_the_metrics_types_and_labels() -> None:
    series = registered_series()
    problems = [f"{where}: {problem}" for where, expr in all_exprs()
                for problem in expression_problems(expr, series)]
    assert not problems, "\n  ".join(["queries that do not fit what the code exports:", *problems])


def test_alert_annotations_name_labels_the_alert_has() -> None:
    series = registered_series()
    problems: list[str] = []
    for rule in alerts():
        labels = Checker(series).check(str(rule["expr"])) or frozenset()
        text = " ".join(str(v) for v in (rule.get("annotations") or {}).values())
        for label in sorted(set(re.findall(r"\$labels\.(\w+)", text)) - labels):
            problems.append(f"{rule['alert']}: $labels.{label} is not a label of its expression ({sorted(labels)})")
    assert not problems, "\n  ".join(problems)


# each of these is wrong, and the checks must say so (substring of the problem reported)
HOSTILE_QUERIES = {
    "rate(reelfab_publisher_review_jobs[5m])": "a gauge",
    "sum(increase(reelfab_gpu_temperature_celsius[1h]))": "a gauge",
    "irate(reelfab_consumer_lag_messages[5m])": "a gauge",
    "rate(reelfab_analytics_arm_posts[5m])": "a gauge",
    "rate(sum(reelfab_swap_jobs_waiting)[10m:1m])": "a gauge",
    "histogram_quantile(0.95, sum by (service) (rate(reelfab_stage_seconds_bucket[5m])))": "not grouped by le",
    "histogram_quantile(0.95, sum(rate(reelfab_stage_seconds_bucket[5m])))": "not grouped by le",
    "histogram_quantile(0.95, max by (le) (rate(reelfab_stage_seconds_bucket[5m])))": "not grouped by le",
    "histogram_quantile(0.95, sum by (le) (rate(reelfab_stage_seconds_count[5m])))": "*_bucket",
    "histogram_quantile(0.95, reelfab_stage_seconds_bucket)": "*_bucket",
    "histogram_quantile(0.5, sum by (le) (reelfab_swap_jobs_waiting))": "*_bucket",
    'reelfab_swap_jobs_total{status="failed"}': "no label 'status'",
    'reelfab_gpu_temperature_celsius{service="swapper-gpu"}': "no label 'service'",
    'reelfab_publisher_review_jobs{pod="x"}': "no label 'pod'",
    "sum by (service) (rate(reelfab_swap_jobs_total[5m]))": "by (service)",
    "sum without (reason) (reelfab_publisher_review_jobs)": "without (reason)",
    "max by (le) (reelfab_dlq_total)": "by (le)",
    "sum by (group) (reelfab_consumer_lag_messages{service=\"planner\"}) > on (topic) 0 * up": "on (topic)",
    "histogram_quantile(0.5, sum by (le, stage) (rate(reelfab_stage_seconds_bucket[5m]))) > on (service) "
    "sum by (stage) (reelfab_planner_candidates)": "on (service)",
    "sum(reelfab_publisher_review_jobs)": "use max",
    'sum by (status) (reelfab_publisher_review_jobs{status="waiting"})': "use max",
    "sum by (why) (reelfab_publisher_posts_stalled) > 0": "use max",
    "sum(reelfab_publisher_takedown_backlog) > 0": "use max",
    "sum(reelfab_publisher_accounts_without_valid_token)": "use max",
    "sum by (status) (reelfab_planner_jobs)": "use max",
    "sum by (group, topic) (reelfab_consumer_lag_messages)": "consent views",
    'sum by (service, group) (reelfab_consumer_lag_messages{group=~".+\\\\.consent-view"})': "consent views",
}
# and these are right: no problem reported
SOUND_QUERIES = [
    "sum by (le, service) (rate(reelfab_stage_seconds_bucket[5m]))",
    "histogram_quantile(0.9, sum by (le) (increase(reelfab_swap_queue_lag_seconds_bucket[1h])))",
    "histogram_quantile(0.9, rate(reelfab_swap_queue_lag_seconds_bucket[5m]))",
    "sum(max by (status) (reelfab_publisher_review_jobs))",
    "sum by (instance) (reelfab_publisher_review_jobs)",
    'sum by (group, topic) (reelfab_consumer_lag_messages{group!~".+\\\\.consent-view"})',
    'sum by (group, topic) (reelfab_consumer_lag_messages{group="swapper-gpu"})',
    "max by (service, group, instance) (reelfab_consumer_lag_messages)",
    'label_replace(up, "svc", "$1", "job", "(.*)")',
    "rate(reelfab_stage_seconds_sum[5m]) / rate(reelfab_stage_seconds_count[5m])",
    "reelfab_dlq_total unless reelfab_dlq_total offset 10m",
]


@pytest.mark.parametrize("expr", sorted(HOSTILE_QUERIES))
def test_a_hostile_query_is_refused(expr: str) -> None:
    problems = expression_problems(expr)
    assert any(HOSTILE_QUERIES[expr] in p for p in problems), problems


@pytest.mark.parametrize("expr", SOUND_QUERIES)
def test_a_sound_query_passes(expr: str) -> None:
    assert expression_problems(expr) == []


def test_the_registry_knows_types_and_labels() -> None:
    series = registered_series()
    assert series["reelfab_dlq_total"].monotonic and series["reelfab_dlq_total"].labels == {"service", "topic",
                                                                                            "reason"}
    assert not series["reelfab_gpu_temperature_celsius"].monotonic  # NvmlCollector, against the fake NVML
    assert series["reelfab_gpu_temperature_celsius"].labels == {"gpu"}
    assert series[LAG].type == "gauge" and series[LAG].labels == {"service", "group", "topic"}  # describe()
    assert series["reelfab_analytics_arm_posterior_mean"].labels == {"space", "arm"}  # the leaderboard's
    assert "le" in series["reelfab_stage_seconds_bucket"].labels
    assert "le" not in series["reelfab_stage_seconds_count"].labels
    assert REPLICATED_GAUGES <= {n for n, s in series.items() if s.type == "gauge"}


def test_grafana_variables_are_substituted_before_parsing() -> None:
    assert substitute_grafana("rate(x[$__rate_interval]) + increase(y[$__range])") == \
        "rate(x[5m]) + increase(y[1h])"
    with pytest.raises(AssertionError):
        substitute_grafana("rate(x[$window])")
    with pytest.raises(AssertionError):
        selected("sum(rate(x[5m])")

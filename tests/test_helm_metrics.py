"""The Grafana dashboard and the PrometheusRule alerts query only what the proxy exports.

The exported series come from a live `Telemetry()` registry (the one source of truth), never from a
list kept here. Every query is parsed as PromQL (promql-parser); each selector must name an exported
series, each label it filters, groups or prints must be one that series has (or one Prometheus adds
when scraping), and each literal label value must be one the metric's help text documents.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from lipservice_proxy.telemetry import Telemetry
from tests.support.helm import CHART, NAMESPACE, RELEASE, helm

try:
    import promql_parser
except ImportError as missing:  # a CI without the tools must fail, never skip
    pytest.fail(f"{missing}: install the test tools with `pip install -e '.[test]'`", pytrace=False)

DASHBOARD = CHART / "dashboards" / "lipservice-proxy.json"
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "info": ("_info",),
}
# Added to every series by Prometheus' scrape (ServiceMonitor or the usual pod-annotation job).
TARGET_LABELS = frozenset({"namespace", "pod", "job", "instance", "container"})
# Grafana's variables, replaced by a value of the right kind before parsing.
GRAFANA_VARIABLES = {"__rate_interval": "5m", "__interval": "1m", "__range": "6h", "service": ".*"}
LITERAL_OPS = (promql_parser.MatchOp.Equal, promql_parser.MatchOp.NotEqual)
REGEX_OPS = (promql_parser.MatchOp.Re, promql_parser.MatchOp.NotRe)


@dataclass(frozen=True)
class Series:
    labels: frozenset[str]
    documentation: str


@dataclass(frozen=True)
class Query:
    where: str
    expr: str
    legend: str = ""


def exported_series() -> dict[str, Series]:
    telemetry = Telemetry()
    # prometheus_client keeps label names only on the metric objects (`_labelnames`); the families
    # collect() yields carry name, type and help, but no labels until a labelled child exists.
    labels = {
        metric._name: frozenset(metric._labelnames)
        for metric in vars(telemetry).values()
        if isinstance(metric, MetricWrapperBase)
    }
    series = {}
    for family in telemetry.registry.collect():
        for suffix in SUFFIXES[family.type]:
            extra = {"le"} if suffix == "_bucket" else set()
            series[family.name + suffix] = Series(labels[family.name] | extra, family.documentation)
    return series


EXPORTED = exported_series()


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> list[Query]:
    return [
        Query(f"panel {panel['title']!r} {target['refId']}", target["expr"], target.get("legendFormat", ""))
        for panel in _panels(dashboard()["panels"])
        for target in panel.get("targets", [])
    ]


def alert_rules() -> list[dict[str, Any]]:
    """The groups of the chart's PrometheusRule, as rendered."""
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(
            {"metrics": {"prometheusRule": {"enabled": True}}}, name=RELEASE, namespace=NAMESPACE
        )
    (rule,) = [
        doc
        for path, text in manifests.items()
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc and doc["kind"] == "PrometheusRule"
    ]
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    assert groups and all(group["rules"] for group in groups), "the PrometheusRule has no rules"
    return groups


def alert_queries() -> list[Query]:
    return [Query(f"alert {r['alert']}", r["expr"]) for group in alert_rules() for r in group["rules"]]


QUERIES = dashboard_queries() + alert_queries()


def _substitute_variables(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in GRAFANA_VARIABLES, f"unknown Grafana variable ${name} in {expr!r}"
        return GRAFANA_VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def _documented(value: str, series: Series) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(value)}(?![\w-])", series.documentation) is not None


def problems_in(query: Query) -> list[str]:
    """What is wrong with one query; empty when it only uses what the proxy exports."""
    try:
        tree = promql_parser.parse(_substitute_variables(query.expr))
    except (ValueError, RuntimeError) as error:
        return [f"not PromQL: {error}"]
    problems: list[str] = []
    selectors: list[Any] = []
    groupings: list[str] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            selectors.append(node)
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            groupings.extend(node.modifier.labels)
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            if node.modifier.matching is not None:
                groupings.extend(node.modifier.matching.labels)
            groupings.extend(node.modifier.group_labels or [])
        return True

    promql_parser.walk(tree, visit)
    if not selectors:
        problems.append("queries no series")
    available = set(TARGET_LABELS)
    for selector in selectors:
        series = EXPORTED.get(selector.name or "")
        if series is None:
            problems.append(f"{selector.name!r} is not a series the proxy exports")
            continue
        available |= series.labels
        for matcher in selector.matchers.matchers:
            if matcher.name not in series.labels:
                problems.append(f"{selector.name} has no label {matcher.name!r}")
            elif matcher.op in LITERAL_OPS and matcher.value and not _documented(matcher.value, series):
                problems.append(
                    f"{selector.name}{{{matcher.name}}}: value {matcher.value!r} is not in its help text"
                )
            elif matcher.op in REGEX_OPS and matcher.value != GRAFANA_VARIABLES["service"]:
                undocumented = [v for v in matcher.value.split("|") if not _documented(v, series)]
                problems.extend(
                    f"{selector.name}{{{matcher.name}}}: value {v!r} is not in its help text"
                    for v in undocumented
                )
    legend_labels = re.findall(r"\{\{\s*(\w+)\s*\}\}", query.legend)
    problems.extend(
        f"label {label!r} exists on none of its series"
        for label in [*groupings, *legend_labels]
        if label not in available
    )
    return problems


@pytest.mark.parametrize("query", QUERIES, ids=[q.where for q in QUERIES])
def test_query_uses_only_what_the_proxy_exports(query: Query) -> None:
    assert problems_in(query) == [], query.expr


def test_the_checks_catch_misspelt_metrics_labels_and_values() -> None:
    bad = {
        "sum(rate(lipservice_log_records_kep_total[5m]))": "is not a series",
        "sum by (exporter) (rate(lipservice_log_records_kept_total[5m]))": "label 'exporter' exists on none",
        'rate(lipservice_policy_reloads_total{outcome="failed"}[5m])': "'failed' is not in its help text",
        'rate(lipservice_policy_reloads_total{result="error"}[5m])': "has no label 'result'",
        "lipservice_patterns_active{": "not PromQL",
    }
    for expr, expected in bad.items():
        found = problems_in(Query("probe", expr))
        assert any(expected in problem for problem in found), (expr, found)


def test_dashboard_variables_query_exported_labels() -> None:
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["definition"])
        assert match, variable["definition"]
        metric, label = match.groups()
        assert metric in EXPORTED and label in EXPORTED[metric].labels


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    used = {name for q in dashboard_queries() for name in re.findall(r"\blipservice_\w+", q.expr)}
    wanted = {
        "lipservice_log_records_kept_total",  # kept vs dropped records
        "lipservice_log_records_dropped_total",
        "lipservice_log_bytes_kept_total",  # kept vs dropped bytes, savings %
        "lipservice_log_bytes_dropped_total",
        "lipservice_log_bytes_received_total",
        "lipservice_pattern_records_total",  # top patterns
        "lipservice_anomalies_total",
        "lipservice_export_requests_total",  # export errors
        "lipservice_export_queue_records",  # queue depth
        "lipservice_policy_version",
    }
    assert wanted <= used, wanted - used


def test_dashboard_layout_is_well_formed() -> None:
    panels = list(_panels(dashboard()["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}", panel["title"]


# ---- the alert rules, evaluated by Prometheus' own rule engine (promtool) ----

POD = {"namespace": "shop", "pod": "lipservice-proxy-7x2kq"}
EXPORTER = {**POD, "exporter": "backend"}
# For each alert, series of a proxy in that trouble (promtool's expanding notation, one sample a
# minute); the healthy run uses the same series with every failure counter flat.
TROUBLE: dict[str, list[tuple[str, dict[str, str], str]]] = {
    "LipserviceExportRecordsLost": [
        ("lipservice_export_records_total", {**EXPORTER, "outcome": "sent"}, "0+100x40"),
        ("lipservice_export_records_total", {**EXPORTER, "outcome": "rejected"}, "0+3x40"),
    ],
    "LipserviceExportRetrying": [
        ("lipservice_export_requests_total", {**EXPORTER, "outcome": "success"}, "0+1x40"),
        ("lipservice_export_requests_total", {**EXPORTER, "outcome": "retryable_error"}, "0+9x40"),
    ],
    "LipserviceQueueFull": [("lipservice_export_enqueue_refusals_total", EXPORTER, "0+5x40")],
    "LipserviceMemoryLimiterRefusing": [("lipservice_memory_limiter_refusals_total", POD, "0+2x40")],
    "LipserviceReceiverErrors": [
        ("lipservice_receiver_requests_total", {**POD, "protocol": "grpc", "outcome": "success"}, "0+90x40"),
        ("lipservice_receiver_requests_total", {**POD, "protocol": "grpc", "outcome": "error"}, "0+10x40"),
    ],
    "LipservicePolicyReloadFailing": [
        ("lipservice_policy_reloads_total", {**POD, "outcome": "success"}, "1x40"),
        ("lipservice_policy_reloads_total", {**POD, "outcome": "error"}, "0x15 1x25"),
    ],
    "LipserviceAnalysisFailing": [
        ("lipservice_analysis_runs_total", {**POD, "outcome": "heuristic"}, "0x40"),
        ("lipservice_analysis_runs_total", {**POD, "outcome": "error"}, "0+1x40"),
    ],
    "LipserviceDiskQueueCorrupt": [("lipservice_export_corrupt_entries_total", EXPORTER, "0x10 1x30")],
}
FAILURE_OUTCOMES = {"rejected", "retryable_error", "error"}


def _promtool() -> str:
    found = shutil.which("promtool")
    assert found is not None  # the promtool marker saw to it
    return found


def _series(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _healthy(labels: dict[str, str], values: str) -> str:
    """The same series in a healthy proxy: failure counters hold their first value for the whole run."""
    failing = labels.get("outcome", "failure") in FAILURE_OUTCOMES | {"failure"}
    return f"{re.split(r'[+x ]', values)[0]}x40" if failing else values


def _firing(rule: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """The alert promtool must see: the rule's `by` labels of the failing series, its labels, its summary."""
    grouped = re.search(r"by \(([^)]*)\)", rule["expr"])
    assert grouped, rule["expr"]
    kept = {label.strip() for label in grouped.group(1).split(",")}
    alert_labels = {**{k: v for k, v in labels.items() if k in kept}, **rule["labels"]}
    summary = re.sub(
        r"\{\{ \$labels\.(\w+) \}\}", lambda m: alert_labels[m.group(1)], rule["annotations"]["summary"]
    )
    return {"exp_labels": alert_labels, "exp_annotations": {"summary": summary}}


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": alert_rules()}))
    return path


def _promtool_run(*args: str) -> None:
    result = subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.promtool
def test_promtool_accepts_the_alert_rules(rules_file: Path) -> None:
    _promtool_run("check", "rules", str(rules_file))


@pytest.mark.promtool
def test_each_alert_fires_on_its_trouble_and_none_when_healthy(rules_file: Path) -> None:
    rules = {r["alert"]: r for group in alert_rules() for r in group["rules"]}
    assert set(TROUBLE) == set(rules), "every alert needs a trouble scenario here"
    tests = []
    for alert, series in TROUBLE.items():
        failing_labels = series[-1][1]
        trouble = [{"series": _series(name, labels), "values": values} for name, labels, values in series]
        healthy = [
            {"series": _series(name, labels), "values": _healthy(labels, values)}
            for name, labels, values in series
        ]
        tests += [
            {
                "interval": "1m",
                "input_series": trouble,
                "alert_rule_test": [
                    {
                        "eval_time": "25m",
                        "alertname": alert,
                        "exp_alerts": [_firing(rules[alert], failing_labels)],
                    }
                ],
            },
            {
                "interval": "1m",
                "input_series": healthy,
                "alert_rule_test": [
                    {"eval_time": "25m", "alertname": name, "exp_alerts": []} for name in rules
                ],
            },
        ]
    unit = rules_file.with_name("rules_test.yaml")
    unit.write_text(
        yaml.safe_dump({"rule_files": [rules_file.name], "evaluation_interval": "1m", "tests": tests})
    )
    _promtool_run("test", "rules", str(unit))

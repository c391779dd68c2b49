"""The Grafana dashboard (deploy/grafana/itsm-platform.json) against the code's metrics, offline.

Every panel query parses as PromQL (promql-parser, once Grafana's variables are substituted),
names only metrics the code registers in prometheus_client's registry and only labels they
carry (or that Prometheus adds); every `itsm_*` metric of the code has a panel and an entry in
docs/operations.md#metrics; the dashboard is a Grafana 10+ one on a Prometheus data source
variable.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
from prometheus_client import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "itsm-platform.json"
OPERATIONS = ROOT / "docs" / "operations.md"

# Every module that defines platform metrics: importing them registers their families.
METRIC_MODULES = [
    "shared.http.app",
    "shared.metrics",
    "shared.bus.processing",
    "shared.store.relay",
    "services.sla.processor.metrics",
    "services.sla.api.live",
    "services.notify.sender",
]
# Labels Prometheus attaches to every scraped series, and a histogram bucket's bound.
TARGET_LABELS = {"job", "instance"}
# Grafana's macros and this dashboard's variables, as values a query could be run with.
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__range": "1h",
    "$__interval": "30s",
    "$job": "incidents",
    "$service": "incidents",
}
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
}

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def dashboard() -> Doc:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def registered() -> dict[str, tuple[str, set[str]]]:
    """Each sample name the code can expose -> (its family, the labels it carries)."""
    for module in METRIC_MODULES:
        importlib.import_module(module)
    collectors = REGISTRY._names_to_collectors  # no public way to read a metric's label names
    found: dict[str, tuple[str, set[str]]] = {}
    for family in REGISTRY.collect():
        if not family.name.startswith("itsm_"):
            continue
        collector = collectors.get(family.name) or collectors[f"{family.name}_total"]
        labels = set(getattr(collector, "_labelnames", ()))
        for suffix in SAMPLE_SUFFIXES[family.type]:
            extra = {"le"} if suffix == "_bucket" else set()
            found[family.name + suffix] = (family.name, labels | extra)
    return found


def panels(dashboard: Doc) -> list[Doc]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def queries(dashboard: Doc) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels(dashboard) for t in p["targets"]]


def substituted(expr: str) -> str:
    for variable, value in sorted(SUBSTITUTIONS.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"an unknown variable in {expr}"
    return expr


def selectors_and_groupings(expr: str) -> tuple[list[tuple[str, set[str]]], list[set[str]]]:
    """The (metric, matcher labels) of every selector and the labels of every `by`/`without`."""
    selectors: list[tuple[str, set[str]]] = []
    groupings: list[set[str]] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            selectors.append((node.name, {m.name for m in node.matchers.matchers}))
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            groupings.append(set(node.modifier.labels))
        return True

    promql_parser.walk(promql_parser.parse(substituted(expr)), visit)
    return selectors, groupings


def test_it_is_a_grafana_10_dashboard_on_a_prometheus_datasource_variable(
    dashboard: Doc,
) -> None:
    assert dashboard["schemaVersion"] >= 38  # Grafana 10.0+
    assert dashboard["uid"] == "itsm-platform"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    uid = "${datasource}"
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == uid, variable["name"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
    refs = {f"${name}" for name in variables} | {"$__rate_interval", "$__range"}
    for title, expr in queries(dashboard):
        used = set(re.findall(r"\$\w+", expr))
        assert used <= refs, f"{title}: {used - refs}"


def test_every_query_parses_as_promql(dashboard: Doc) -> None:
    assert queries(dashboard)
    for title, expr in queries(dashboard):
        try:
            promql_parser.parse(substituted(expr))
        except ValueError as exc:
            pytest.fail(f"{title}: {expr!r} does not parse: {exc}")


def test_the_parser_refuses_a_broken_query() -> None:
    """The check above could fail: an unbalanced query is refused."""
    with pytest.raises(ValueError):
        promql_parser.parse(substituted("sum(rate(itsm_http_requests_total[$__rate_interval])"))


def test_every_queried_metric_and_label_exists_in_the_code(
    dashboard: Doc, registered: dict[str, tuple[str, set[str]]]
) -> None:
    problems = []
    for title, expr in queries(dashboard):
        selectors, groupings = selectors_and_groupings(expr)
        assert selectors, f"{title}: no metric"
        known: set[str] = set(TARGET_LABELS)
        for name, matchers in selectors:
            if name not in registered:
                problems.append(f"{title}: {name} is not a metric the code registers")
                continue
            labels = registered[name][1] | TARGET_LABELS
            known |= labels
            if matchers - labels:
                problems.append(f"{title}: {name} has no label {sorted(matchers - labels)}")
        for grouping in groupings:
            if grouping - known:
                problems.append(f"{title}: grouped by unknown {sorted(grouping - known)}")
    assert not problems, "\n".join(problems)


def test_every_platform_metric_has_a_panel_and_documentation(
    dashboard: Doc, registered: dict[str, tuple[str, set[str]]]
) -> None:
    families = {family for family, _ in registered.values()}
    shown = {
        registered[name][0]
        for _, expr in queries(dashboard)
        for name, _ in selectors_and_groupings(expr)[0]
        if name in registered
    }
    assert families - shown == set(), "metrics without a panel"
    metrics_section = OPERATIONS.read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`(itsm_\w+?)(?:_total)?`", metrics_section))
    undocumented = families - documented  # a counter's family drops the `_total`
    assert not undocumented, f"not in docs/operations.md#metrics: {sorted(undocumented)}"

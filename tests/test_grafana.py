"""examples/grafana_dashboard.json: a dashboard of the metrics that register() exports."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import ccxt_breaker
from ccxt_breaker.prometheus import register

DASHBOARD = Path(__file__).parent.parent / "examples" / "grafana_dashboard.json"

# PromQL words that are not metric names
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
KEYWORDS |= {"group_left", "group_right", "inf", "nan"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_MATCHERS = re.compile(r"\{([^}]*)\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_VARIABLE = re.compile(r"\$\{?\w+\}?")
_NAME = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?:(.*),\s*)?(\w+)\s*\)\s*$", re.DOTALL)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture
async def exported() -> AsyncIterator[tuple[set[str], set[str]]]:
    """The names and label names of every sample the collector exports, as registered on a
    fresh registry for an exchange."""
    exchange = ccxt_breaker.kraken()
    registry = CollectorRegistry()
    register(exchange, registry=registry)
    samples = [sample for family in registry.collect() for sample in family.samples]
    yield {s.name for s in samples}, {label for s in samples for label in s.labels}
    await exchange.close()


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression: identifiers that are neither functions,
    keywords, label names (in matchers and label lists), strings nor variables."""
    expr = _STRING.sub('""', expr)
    expr = _MATCHERS.sub("", expr)
    expr = _LABEL_LIST.sub("", expr)
    expr = _RANGE.sub("", expr)
    expr = _VARIABLE.sub("", expr)
    return {name for name in _NAME.findall(expr) if name.lower() not in KEYWORDS}


def label_names(expr: str) -> set[str]:
    """The label names a PromQL expression matches on or aggregates by."""
    expr = _STRING.sub('""', expr)
    names = set()
    for matchers in _MATCHERS.findall(expr):
        names |= {m.split("=")[0].split("!")[0].strip() for m in matchers.split(",") if m.strip()}
    for labels in _LABEL_LIST.findall(expr):
        names |= {label.strip() for label in labels.split(",") if label.strip()}
    return names


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(where, PromQL, legend) of every panel target and every query variable;
    label_values(expr, label) yields expr and ``{{label}}`` as its legend."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"], target.get("legendFormat", "")
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            assert text == variable["definition"]
            found = _LABEL_VALUES.match(text)
            assert found, text
            yield f"${variable['name']}", found.group(1) or "", "{{" + found.group(2) + "}}"


def test_the_metric_name_regex() -> None:
    """metric_names() finds the metrics of an expression, and only them."""
    expr = (
        'sum by (group, outcome) (rate(ccxt_breaker_calls_total{group=~"$group", a="x y"}'
        "[$__rate_interval])) > 0 and on (group) ccxt_breaker_state offset 5m"
    )
    assert metric_names(expr) == {"ccxt_breaker_calls_total", "ccxt_breaker_state"}
    assert label_names(expr) == {"group", "outcome", "a"}


def test_the_dashboard_is_a_grafana_json_model(dashboard: dict[str, Any]) -> None:
    """The JSON model loads, with datasource, exchange and account variables used by every panel."""
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"exchange", "account"} <= set(variables)
    assert dashboard["panels"]
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert len(set(titles)) == len(titles)
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(titles)
    ours = {"type": "prometheus", "uid": "${datasource}"}
    for panel in dashboard["panels"]:
        assert panel["datasource"] == ours, panel["title"]
        assert all(t["datasource"] == ours for t in panel["targets"]), panel["title"]
    for name in ("exchange", "account"):
        assert variables[name]["datasource"] == ours


def test_every_query_names_only_exported_metrics_and_labels(
    dashboard: dict[str, Any], exported: tuple[set[str], set[str]]
) -> None:
    """Every PromQL expression names only exported metrics and labels, and all metrics are shown."""
    names, labels = exported
    used = set()
    for where, expr, legend in queries(dashboard):
        found = metric_names(expr)
        assert found, (where, expr)
        assert found <= names, (where, found - names)
        assert label_names(expr) <= labels, (where, label_names(expr) - labels)
        assert set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend)) <= labels, (where, legend)
        used |= found
    assert used == names


def test_panels_filter_by_the_variables(dashboard: dict[str, Any]) -> None:
    """Every selector of every panel filters on $exchange and $account."""
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for selector in _MATCHERS.findall(target["expr"]):
                assert 'exchange=~"$exchange"' in selector, panel["title"]
                assert 'account=~"$account"' in selector, panel["title"]

"""Every PromQL query of the dashboard, expanded as Grafana expands it, on real Prometheus.

The fleet serves vLLM and DCGM pods of both roles in one namespace, and the exporter
pdscaler's own metric names; every query must parse and return series for them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.grafana.conftest import NAMESPACE, OTHER_NAMESPACE
from tests.grafana.expand import Variable, expand_promql, rate_interval
from tests.prometheus import PrometheusServer

# Grafana's interval for a short range on a narrow panel; the test Prometheus scrapes
# every second, which stands in for the data source's scrape interval.
INTERVAL = timedelta(seconds=2)
SCRAPE_INTERVAL = timedelta(seconds=1)
WAIT_S = 30.0

ALL = {
    "namespace": Variable("namespace", ["$__all"], [OTHER_NAMESPACE, NAMESPACE]),
    "policy": Variable("policy", ["$__all"], ["llama", "qwen"]),
    "role": Variable("role", ["$__all"], ["prefill", "decode"]),
}


def prometheus_targets(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every Prometheus query."""
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            if target.get("datasource", {}).get("type") == "prometheus":
                found.append((panel["title"], target["expr"]))
    return found


def query_range(server: PrometheusServer, promql: str) -> list[dict[str, Any]]:
    """A range query as a Grafana panel sends it: the last minute at the panel's step."""
    end = time.time()
    response = httpx.get(
        f"{server.url}/api/v1/query_range",
        params={
            "query": promql,
            "start": end - 60,
            "end": end,
            "step": INTERVAL.total_seconds(),
        },
        timeout=5.0,
    )
    assert response.status_code == 200, f"{promql}: {response.text}"
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


def series_of(server: PrometheusServer, promql: str) -> list[dict[str, Any]]:
    """Poll until the query returns series (rates need a few scrapes first)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        result = query_range(server, promql)
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def last(series: dict[str, Any]) -> float:
    return float(series["values"][-1][1])


def test_rate_interval_is_grafanas() -> None:
    assert rate_interval(timedelta(seconds=2), timedelta(seconds=1)) == timedelta(seconds=4)
    assert rate_interval(timedelta(seconds=30), timedelta(seconds=15)) == timedelta(seconds=60)
    assert rate_interval(timedelta(minutes=5), timedelta(seconds=15)) == timedelta(
        minutes=5, seconds=15
    )


def test_variables_expand_to_regular_expressions() -> None:
    one = {"namespace": Variable("namespace", [NAMESPACE])}
    expr = 'x{namespace=~"$namespace", role=~"${role}"}[$__rate_interval]'

    assert expand_promql(expr, {**ALL, **one}, interval=INTERVAL,
                         scrape_interval=SCRAPE_INTERVAL) == (
        f'x{{namespace=~"{NAMESPACE}", role=~"(prefill|decode)"}}[4000ms]'
    )  # fmt: skip


def test_every_prometheus_query_returns_series(
    metrics_prometheus: PrometheusServer, dashboard: dict[str, Any]
) -> None:
    targets = prometheus_targets(dashboard)
    empty = []
    for title, expr in targets:
        promql = expand_promql(expr, ALL, interval=INTERVAL, scrape_interval=SCRAPE_INTERVAL)
        if not series_of(metrics_prometheus, promql):
            empty.append(f"{title}: {promql}")

    assert len(targets) >= 20
    assert not empty, "queries without series:\n" + "\n".join(empty)


@pytest.mark.parametrize(
    ("title", "legend", "expected"),
    [
        ("Replicas", "{{policy}} {{role}} current", {("llama", "prefill"): 2.0}),
        ("Replicas", "{{policy}} {{role}} desired", {("llama", "prefill"): 3.0}),
        ("GPU utilisation", "{{namespace}} {{role}}",
         {(NAMESPACE, "prefill"): 70.0, (NAMESPACE, "decode"): 70.0}),
        ("GPU power", "{{namespace}} {{role}}",
         {(NAMESPACE, "prefill"): 450.0, (NAMESPACE, "decode"): 450.0}),
        ("KV cache utilisation", "{{namespace}} {{role}}",
         {(NAMESPACE, "prefill"): 0.4, (NAMESPACE, "decode"): 0.4}),
        ("Time to first token", "SLO {{policy}}", {(NAMESPACE, "llama"): 0.8}),
        ("Inter-token latency", "SLO {{policy}}", {(NAMESPACE, "llama"): 0.03}),
    ],
)  # fmt: skip
def test_per_pool_series_have_the_values_served(
    metrics_prometheus: PrometheusServer,
    dashboard: dict[str, Any],
    title: str,
    legend: str,
    expected: dict[tuple[str, str], float],
) -> None:
    (panel,) = [p for p in dashboard["panels"] if p.get("title") == title]
    (expr,) = [t["expr"] for t in panel["targets"] if t["legendFormat"] == legend]
    promql = expand_promql(expr, ALL, interval=INTERVAL, scrape_interval=SCRAPE_INTERVAL)

    result = series_of(metrics_prometheus, promql)

    keys = ("policy", "role") if "policy" in legend and "role" in legend else None
    keys = keys or (("namespace", "policy") if "policy" in legend else ("namespace", "role"))
    found = {tuple(s["metric"][k] for k in keys): last(s) for s in result}
    assert found.keys() == expected.keys()
    for key, value in expected.items():
        assert math.isclose(found[key], value), (key, found[key])


def test_a_selected_role_narrows_engine_and_pdscaler_series(
    metrics_prometheus: PrometheusServer, dashboard: dict[str, Any]
) -> None:
    decode = {**ALL, "role": Variable("role", ["decode"], ["prefill", "decode"])}
    (gpu,) = [p for p in dashboard["panels"] if p.get("title") == "GPU utilisation"]
    (replicas,) = [p for p in dashboard["panels"] if p.get("title") == "Replicas"]

    def roles(expr: str) -> set[str]:
        promql = expand_promql(expr, decode, interval=INTERVAL, scrape_interval=SCRAPE_INTERVAL)
        return {s["metric"]["role"] for s in query_range(metrics_prometheus, promql)}

    series_of(metrics_prometheus, expand_promql(gpu["targets"][0]["expr"], ALL,
              interval=INTERVAL, scrape_interval=SCRAPE_INTERVAL))  # fmt: skip
    assert roles(gpu["targets"][0]["expr"]) == {"decode"}
    assert roles(replicas["targets"][0]["expr"]) == set()  # only prefill is exported

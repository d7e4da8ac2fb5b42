"""The simulated replicas as vLLM pods: which pods exist, and that their series add up."""

from __future__ import annotations

from collections import defaultdict
from importlib.resources import files
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pdscaler.domain.policy import Role
from pdscaler.metrics.presets import load_preset
from pdscaler.profiles import DEFAULT_PROFILE, load_profile
from pdscaler.sim.cluster import Cluster, SimConfig
from pdscaler.sim.exporter import SimExporter
from pdscaler.sim.traces import Request, load_trace, window

P, D = Role.PREFILL, Role.DECODE
BUNDLED = Path(str(files("pdscaler.sim") / "data" / "azure-conv-10min.csv"))
Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]  # (name, labels): value


@pytest.fixture(scope="module")
def config() -> SimConfig:
    return SimConfig(load_profile(DEFAULT_PROFILE), cold_start_s=10.0)


@pytest.fixture(scope="module")
def trace() -> list[Request]:
    return window(load_trace(BUNDLED), 0, 30)


def scrape(exporter: SimExporter) -> Series:
    text = generate_latest(exporter).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def pods(series: Series, role: Role) -> set[str]:
    return {dict(labels)["pod"] for _name, labels in series if dict(labels)["role"] == role}


def total(series: Series, name: str, role: Role) -> float:
    return sum(v for (n, labels), v in series.items() if n == name and dict(labels)["role"] == role)


def test_every_family_of_the_vllm_preset_is_exposed(
    config: SimConfig, trace: list[Request]
) -> None:
    exporter = SimExporter(Cluster(config, trace, {P: 1, D: 1}), namespace="ns", model="m")

    names = {name for name, _labels in scrape(exporter)}

    for family in load_preset("vllm").families.values():
        newest = family.names[0]
        assert newest in names or f"{newest}_count" in names, newest


def test_pods_are_the_ready_and_draining_replicas(config: SimConfig, trace: list[Request]) -> None:
    cluster = Cluster(config, trace, {P: 1, D: 1})
    exporter = SimExporter(cluster, namespace="ns", model="m")
    cluster.set_replicas(P, 3)

    assert pods(scrape(exporter), P) == {"m-prefill-0"}  # the two asked for are starting
    cluster.run_until(config.cold_start_s)
    assert len(pods(scrape(exporter), P)) == 3

    cluster.set_replicas(P, 1)  # two idle replicas go at once
    series = scrape(exporter)

    assert len(pods(series, P)) == 1
    labels = dict(next(labels for _name, labels in series))
    assert {k: labels[k] for k in ("namespace", "model_name", "engine")} == {
        "namespace": "ns", "model_name": "m", "engine": "0"}  # fmt: skip


def test_counters_add_up_to_what_the_cluster_did(config: SimConfig, trace: list[Request]) -> None:
    cluster = Cluster(config, trace, {P: 2, D: 2})
    exporter = SimExporter(cluster, namespace="ns", model="m")
    last: Series = {}
    went_back: list[str] = []
    while not cluster.done():
        cluster.run_until(cluster.now + 1.0)
        series = scrape(exporter)
        went_back += [key[0] for key, value in series.items()
                      if _cumulative(key) and value < last.get(key, 0)]  # fmt: skip
        last = series

    assert went_back == []
    requests, inputs = len(trace), sum(r.input_tokens for r in trace)
    outputs = sum(r.output_tokens for r in trace)
    expected = {
        P: {"success": requests, "prompt": inputs, "generated": requests, "ttft": requests,
            "itl": 0},
        D: {"success": requests, "prompt": inputs, "generated": outputs, "ttft": requests,
            "itl": outputs - requests},
    }  # fmt: skip
    for role in Role:
        assert {
            "success": total(last, "vllm:request_success_total", role),
            "prompt": total(last, "vllm:prompt_tokens_total", role),
            "generated": total(last, "vllm:generation_tokens_total", role),
            "ttft": total(last, "vllm:time_to_first_token_seconds_count", role),
            "itl": total(last, "vllm:inter_token_latency_seconds_count", role),
        } == expected[role], role
        assert total(last, "vllm:request_prompt_tokens_sum", role) == inputs
        assert total(last, "vllm:num_requests_running", role) == 0


def test_served_in_the_text_format_whatever_the_scraper_asks(
    config: SimConfig, trace: list[Request]
) -> None:
    exporter = SimExporter(Cluster(config, trace, {P: 1, D: 1}), namespace="ns", model="m")
    openmetrics = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"

    with exporter:
        response = httpx.get(f"http://{exporter.target}/metrics", headers={"Accept": openmetrics})

    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    by_role: dict[str, int] = defaultdict(int)
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            by_role[sample.labels["role"]] += sample.name == "vllm:num_requests_waiting"
    assert by_role == {"prefill": 1, "decode": 1}


def _cumulative(key: tuple[str, tuple[tuple[str, str], ...]]) -> bool:
    return key[0].endswith(("_total", "_bucket", "_count", "_sum"))

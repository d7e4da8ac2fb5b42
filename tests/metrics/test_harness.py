"""The harness itself: what a fake pod exposes is what a real Prometheus answers."""

from __future__ import annotations

import math
import time

import httpx
import pytest

from tests.fleet import FakeFleet
from tests.prometheus import PrometheusServer, QueryResult

PREFILL = {"role": "prefill", "model_name": "llama"}


def by_pod(result: QueryResult) -> dict[str, float]:
    return {s["metric"]["pod"]: float(s["value"][1]) for s in result}


def test_values_set_on_a_vllm_pod_come_back_with_its_labels(
    fleet: FakeFleet, live_prometheus: PrometheusServer, namespace: str
) -> None:
    pod = fleet.add_pod(engine="vllm", namespace=namespace, pod="llama-p-0", labels=PREFILL)
    pod.set("vllm:num_requests_waiting", 7)
    pod.set("vllm:prompt_tokens_total", 1234)

    live_prometheus.wait_for_scrape()

    waiting = live_prometheus.query(f'vllm:num_requests_waiting{{namespace="{namespace}"}}')
    tokens = live_prometheus.query(f'vllm:prompt_tokens_total{{namespace="{namespace}"}}')
    assert by_pod(waiting) == {"llama-p-0": 7.0}
    assert by_pod(tokens) == {"llama-p-0": 1234.0}
    labels = waiting[0]["metric"]
    assert {k: labels[k] for k in ("namespace", "pod", "role", "model_name", "engine")} == {
        "namespace": namespace,
        "pod": "llama-p-0",
        "role": "prefill",
        "model_name": "llama",
        "engine": "0",
    }
    assert tokens[0]["metric"]["__name__"] == "vllm:prompt_tokens_total"


def test_a_removed_pods_series_leave_instant_queries(
    fleet: FakeFleet, live_prometheus: PrometheusServer, namespace: str
) -> None:
    kept = fleet.add_pod(engine="sglang", namespace=namespace, pod="kept")
    gone = fleet.add_pod(engine="sglang", namespace=namespace, pod="gone")
    kept.set("sglang:num_queue_reqs", 1)
    gone.set("sglang:num_queue_reqs", 2)
    query = f'sglang:num_queue_reqs{{namespace="{namespace}"}}'
    live_prometheus.wait_for(query, lambda r: by_pod(r) == {"kept": 1.0, "gone": 2.0})

    gone.remove()

    # Staleness markers end it at the next scrape; the lookback delta is the upper bound.
    live_prometheus.wait_for(query, lambda r: by_pod(r) == {"kept": 1.0}, timeout_s=35)


def test_a_hidden_family_leaves_and_its_unhidden_twin_appears(
    fleet: FakeFleet, live_prometheus: PrometheusServer, namespace: str
) -> None:
    pod = fleet.add_pod(engine="vllm", namespace=namespace, pod="old-vllm", labels=PREFILL)
    pod.set("vllm:kv_cache_usage_perc", 0.4)
    pod.set("vllm:gpu_cache_usage_perc", 0.4)
    query = f'{{__name__=~"vllm:(kv|gpu)_cache_usage_perc", namespace="{namespace}"}}'

    def names(result: QueryResult) -> set[str]:
        return {s["metric"]["__name__"] for s in result}

    live_prometheus.wait_for(query, lambda r: names(r) == {"vllm:kv_cache_usage_perc"})

    pod.hide("vllm:kv_cache_usage_perc")
    pod.unhide("vllm:gpu_cache_usage_perc")

    live_prometheus.wait_for(query, lambda r: names(r) == {"vllm:gpu_cache_usage_perc"})


def test_histogram_observations_give_a_quantile_in_their_bucket(
    fleet: FakeFleet, live_prometheus: PrometheusServer, namespace: str
) -> None:
    pod = fleet.add_pod(engine="vllm", namespace=namespace, pod="llama-p-0", labels=PREFILL)
    selector = f'{{namespace="{namespace}"}}'
    pod.observe("vllm:time_to_first_token_seconds", 0.3, count=100)
    live_prometheus.wait_for(
        f"vllm:time_to_first_token_seconds_count{selector}",
        lambda r: by_pod(r) == {"llama-p-0": 100.0},
    )

    pod.observe("vllm:time_to_first_token_seconds", 0.3, count=100)

    # All of the rate lies in (0.25, 0.5]; p90 interpolates to 0.25 + 0.9 × 0.25.
    result = live_prometheus.wait_for(
        "histogram_quantile(0.9, sum by (le) "
        f"(rate(vllm:time_to_first_token_seconds_bucket{selector}[10s])))",
        lambda r: len(r) == 1 and not math.isnan(float(r[0]["value"][1])),
    )
    assert float(result[0]["value"][1]) == pytest.approx(0.475)


def test_after_a_kill_the_port_refuses_and_a_restart_answers_with_the_old_data(
    fleet: FakeFleet, live_prometheus: PrometheusServer, namespace: str
) -> None:
    pod = fleet.add_pod(engine="dynamo", namespace=namespace, pod="frontend")
    query = f'dynamo_frontend_queued_requests{{namespace="{namespace}"}}'
    pod.set("dynamo_frontend_queued_requests", 3)
    live_prometheus.wait_for(query, lambda r: by_pod(r) == {"frontend": 3.0})

    live_prometheus.kill()

    assert not live_prometheus.is_running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{live_prometheus.url}/-/ready")

    live_prometheus.restart()
    pod.set("dynamo_frontend_queued_requests", 5)

    live_prometheus.wait_for(query, lambda r: by_pod(r) == {"frontend": 5.0})
    before = live_prometheus.query(f"min_over_time({query}[5m])")
    assert by_pod(before) == {"frontend": 3.0}


def test_a_fleet_of_ten_thousand_series_scrapes_well_under_a_second() -> None:
    with FakeFleet() as big:
        for i in range(2000):
            big.add_pod(engine="dcgm", namespace="big", pod=f"gpu-pod-{i}")
        started = time.perf_counter()
        body = httpx.get(f"http://{big.target}/metrics", timeout=10).text
        elapsed_s = time.perf_counter() - started

    series = [line for line in body.splitlines() if not line.startswith("#")]
    assert len(series) == 10_000
    # A real scrape times out after the 1 s interval; measured here at about 0.2 s.
    assert elapsed_s < 1.0


def test_a_pod_rejects_names_its_engine_does_not_expose() -> None:
    pod = FakeFleet().add_pod(engine="vllm", namespace="ns", pod="p")

    with pytest.raises(KeyError, match="vllm:num_requests_waiting"):
        pod.set("vllm:num_requests_waitin", 1)
    with pytest.raises(TypeError, match="histogram"):
        pod.set("vllm:time_to_first_token_seconds", 1)
    with pytest.raises(TypeError, match="gauge"):
        pod.observe("vllm:num_requests_waiting", 1)

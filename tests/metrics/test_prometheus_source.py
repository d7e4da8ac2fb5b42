"""The Prometheus source, read through a real Prometheus scraping a fake engine fleet."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from pdscaler.domain.errors import Unavailable
from pdscaler.domain.policy import Policy, Role, parse_policy
from pdscaler.domain.signals import PoolKey, PoolQuery, PoolSignals, Quality, Signal, SignalName
from pdscaler.metrics.prometheus import PrometheusSource, SourceConfig
from tests.factories import policy_doc
from tests.fleet import FakeFleet, FakePod
from tests.prometheus import PrometheusServer

P, D = Role.PREFILL, Role.DECODE
S = SignalName
CONFIG = SourceConfig(rate_window_s=10, stale_after_s=30, timeout_s=2, concurrency=4)
T = TypeVar("T")


def source_for(url: str, config: SourceConfig = CONFIG) -> PrometheusSource:
    client = PrometheusConnect(url=url, timeout=config.timeout_s, retry=Retry(total=0))
    return PrometheusSource(client, config)


ROLE_SELECTORS = {"prefill": {"metricsSelector": {"role": "prefill"}},
                  "decode": {"metricsSelector": {"role": "decode"}}}  # fmt: skip


def policy(namespace: str, name: str = "llama", patch: dict[str, Any] | None = None) -> Policy:
    return parse_policy(policy_doc(patch, name=name, namespace=namespace))


def custom(queries: dict[str, str]) -> dict[str, Any]:
    """A custom-engine patch; its pools told apart by the role label."""
    return {"spec": {"engine": "custom", "queries": queries, **ROLE_SELECTORS}}


def pools(*policies: Policy) -> list[PoolQuery]:
    return [PoolQuery.of(p, role) for p in policies for role in Role]


def eventually(probe: Callable[[], T], check: Callable[[T], bool], timeout_s: float = 20) -> T:
    """Poll until Prometheus has scraped what the test set (readiness, not timing)."""
    if _PROMETHEUS:
        _PROMETHEUS[0].wait_for_scrape()
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout_s}s; last: {value!r}")
        time.sleep(0.25)


def now() -> datetime:
    return datetime.now(UTC)


def vllm_pod(fleet: FakeFleet, namespace: str, pod: str, role: Role) -> FakePod:
    return fleet.add_pod(engine="vllm", namespace=namespace, pod=pod,
                         labels={"role": role.value, "model_name": "llama"})  # fmt: skip


_PROMETHEUS: list[PrometheusServer] = []  # the running server, for eventually()


@pytest.fixture(autouse=True)
def _server(live_prometheus: PrometheusServer) -> Iterator[None]:
    _PROMETHEUS[:] = [live_prometheus]
    yield
    _PROMETHEUS.clear()


@pytest.fixture
def source(live_prometheus: PrometheusServer) -> PrometheusSource:
    return source_for(live_prometheus.url)


def test_gauges_are_summed_and_averaged_per_pool(
    source: PrometheusSource, fleet: FakeFleet, namespace: str
) -> None:
    prefill = [vllm_pod(fleet, namespace, f"llama-prefill-{i}", P) for i in range(2)]
    decode = [vllm_pod(fleet, namespace, f"llama-decode-{i}", D) for i in range(2)]
    prefill[0].set("vllm:num_requests_waiting", 3)
    prefill[1].set("vllm:num_requests_waiting", 4)
    decode[0].set("vllm:kv_cache_usage_perc", 0.2)
    decode[1].set("vllm:kv_cache_usage_perc", 0.6)
    decode[1].set("vllm:num_requests_running", 5)
    queries = pools(policy(namespace))

    seen = eventually(lambda: source.observe(queries, now()),
                      lambda s: s[queries[0].key].get(S.QUEUED_REQUESTS).value == 7
                      and s[queries[1].key].get(S.RUNNING_REQUESTS).value == 5)  # fmt: skip

    prefill_signals, decode_signals = seen[queries[0].key], seen[queries[1].key]
    assert prefill_signals.get(S.QUEUED_REQUESTS).quality is Quality.FRESH
    assert decode_signals.get(S.KV_CACHE_UTILIZATION).value == pytest.approx(0.4)
    assert decode_signals.get(S.QUEUED_REQUESTS).value == 0  # a true zero, fresh
    assert decode_signals.get(S.QUEUED_REQUESTS).quality is Quality.FRESH


def test_requests_per_collection_do_not_grow_with_pools(
    source: PrometheusSource, fleet: FakeFleet, namespace: str
) -> None:
    def requests_for(count: int) -> int:
        policies = [policy(namespace, f"model-{i}", {"spec": {"prefill": {
            "metricsSelector": {"role": "prefill", "model_name": f"m{i}"}}, "decode": {
            "metricsSelector": {"role": "decode", "model_name": f"m{i}"}}}})
            for i in range(count)]  # fmt: skip
        source.observe(pools(*policies), now())  # probes once, outside the count
        before = source.requests
        source.observe(pools(*policies), now())
        return source.requests - before

    assert requests_for(2) == requests_for(40)


def test_rates_and_latency_quantiles(
    source: PrometheusSource, fleet: FakeFleet, namespace: str
) -> None:
    pod = vllm_pod(fleet, namespace, "llama-prefill-0", P)
    vllm_pod(fleet, namespace, "llama-decode-0", D)
    queries = pools(policy(namespace))
    key = queries[0].key

    def traffic() -> PoolSignals:
        pod.observe("vllm:time_to_first_token_seconds", 0.3, count=10)
        pod.observe("vllm:request_prompt_tokens", 900, count=10)
        return source.observe(queries, now())[key]

    seen = eventually(traffic, lambda s: s.get(S.TTFT_MS).quality is Quality.FRESH
                      and (s.get(S.MEAN_INPUT_LENGTH).value or 0) > 0)  # fmt: skip

    assert 250 <= (seen.get(S.TTFT_MS).value or 0) <= 500  # within the 0.3 s bucket
    assert 500 <= (seen.get(S.MEAN_INPUT_LENGTH).value or 0) <= 1000


def test_no_requests_means_nan_latency_not_zero(
    source: PrometheusSource, fleet: FakeFleet, namespace: str
) -> None:
    vllm_pod(fleet, namespace, "llama-prefill-0", P)
    vllm_pod(fleet, namespace, "llama-decode-0", D)
    queries = pools(policy(namespace))

    # A rate needs two samples: until then the quantile has no series at all (empty).
    seen = eventually(lambda: source.observe(queries, now())[queries[0].key],
                      lambda s: s.get(S.TTFT_MS).quality is not Quality.EMPTY)  # fmt: skip

    assert seen.get(S.TTFT_MS).quality is Quality.NAN
    assert seen.get(S.TTFT_MS).value is None
    assert seen.get(S.MEAN_INPUT_LENGTH).value == 0  # 0/0 written as a real 0 by the preset


def test_a_pool_without_series_is_empty(
    source: PrometheusSource, fleet: FakeFleet, namespace: str
) -> None:
    vllm_pod(fleet, namespace, "llama-prefill-0", P)  # no decode pods at all
    queries = pools(policy(namespace))

    seen = eventually(lambda: source.observe(queries, now()),
                      lambda s: s[queries[0].key].get(S.QUEUED_REQUESTS).quality
                      is Quality.FRESH)  # fmt: skip

    assert seen[queries[1].key].get(S.RUNNING_REQUESTS).quality is Quality.EMPTY


def test_series_that_disappear_become_empty(
    source: PrometheusSource, fleet: FakeFleet, namespace: str
) -> None:
    pod = vllm_pod(fleet, namespace, "llama-prefill-0", P)
    queries = pools(policy(namespace))
    key = queries[0].key
    eventually(lambda: source.observe(queries, now())[key],
               lambda s: s.get(S.QUEUED_REQUESTS).quality is Quality.FRESH)  # fmt: skip

    pod.remove()

    seen = eventually(lambda: source.observe(queries, now())[key],
                      lambda s: s.get(S.QUEUED_REQUESTS).quality is Quality.EMPTY)  # fmt: skip
    assert seen.get(S.QUEUED_REQUESTS).value is None


def test_old_samples_are_stale(
    live_prometheus: PrometheusServer, fleet: FakeFleet, namespace: str
) -> None:
    strict = source_for(live_prometheus.url, SourceConfig(rate_window_s=10, stale_after_s=0.001))
    vllm_pod(fleet, namespace, "llama-prefill-0", P).set("vllm:num_requests_waiting", 2)
    queries = pools(policy(namespace))

    seen = eventually(lambda: strict.observe(queries, now())[queries[0].key],
                      lambda s: s.get(S.QUEUED_REQUESTS).value == 2)  # fmt: skip

    signal = seen.get(S.QUEUED_REQUESTS)
    assert signal.quality is Quality.STALE
    assert signal.sampled_at is not None
    assert "s old" in (signal.detail or "")


def test_renamed_metric_is_found_by_alias(
    source: PrometheusSource, fleet: FakeFleet, namespace: str
) -> None:
    old_vllm = vllm_pod(fleet, namespace, "llama-decode-0", D)
    old_vllm.hide("vllm:kv_cache_usage_perc")
    old_vllm.unhide("vllm:gpu_cache_usage_perc")
    old_vllm.set("vllm:gpu_cache_usage_perc", 0.5)
    queries = pools(policy(namespace))
    key = queries[1].key

    def observed() -> Signal:
        source.probe()
        return source.observe(queries, now())[key].get(S.KV_CACHE_UTILIZATION)

    seen = eventually(observed, lambda s: s.value == 0.5)
    assert seen.quality is Quality.FRESH


def test_a_family_absent_everywhere_is_reported_not_read_as_zero(
    source: PrometheusSource, fleet: FakeFleet, namespace: str
) -> None:
    fleet.add_pod(engine="sglang", namespace=namespace, pod="qwen-prefill-0",
                  labels={"engine_type": "prefill"})  # fmt: skip
    queries = pools(policy(namespace, "qwen", {"spec": {"engine": "sglang"}}))
    eventually(lambda: source.observe(queries, now())[queries[0].key],
               lambda s: s.get(S.RUNNING_REQUESTS).quality is Quality.FRESH)  # fmt: skip

    # No test's fleet serves Dynamo's frontend families, so they are absent everywhere.
    problems = source.problems(["dynamo"])
    signals = source.observe(pools(policy(namespace, "dyn", {"spec": {"engine": "dynamo"}})),
                             now())  # fmt: skip

    assert problems
    assert problems[0].startswith("dynamo: no series for")
    assert "dynamo_frontend_queued_requests" in problems[0]
    first = next(iter(signals.values())).get(S.QUEUED_REQUESTS)
    assert first.quality is Quality.EMPTY
    assert first.value is None
    assert "missing from Prometheus" in (first.detail or "")


def test_several_series_where_one_was_expected_is_an_error(
    source: PrometheusSource, fleet: FakeFleet, namespace: str
) -> None:
    for i in range(2):
        vllm_pod(fleet, namespace, f"llama-prefill-{i}", P)
    several = custom({"queuedRequests": "max by ({{by}}, pod) (vllm:num_requests_waiting{{sel}})"})
    queries = pools(policy(namespace, patch=several))

    seen = eventually(lambda: source.observe(queries, now())[queries[0].key],
                      lambda s: s.get(S.QUEUED_REQUESTS).quality is Quality.ERROR)  # fmt: skip

    detail = seen.get(S.QUEUED_REQUESTS).detail or ""
    assert "2 series where one was expected" in detail
    assert "llama-prefill-0" in detail


def test_prometheus_down_is_an_error_not_an_exception(
    live_prometheus: PrometheusServer, fleet: FakeFleet, namespace: str
) -> None:
    source = source_for(live_prometheus.url)
    vllm_pod(fleet, namespace, "llama-prefill-0", P)
    queries = pools(policy(namespace))
    eventually(lambda: source.observe(queries, now())[queries[0].key],
               lambda s: s.get(S.QUEUED_REQUESTS).quality is Quality.FRESH)  # fmt: skip

    live_prometheus.kill()
    down = source.observe(queries, now())[queries[0].key].get(S.QUEUED_REQUESTS)
    live_prometheus.restart()
    live_prometheus.wait_ready()
    back = eventually(lambda: source.observe(queries, now())[queries[0].key],
                      lambda s: s.get(S.QUEUED_REQUESTS).quality is Quality.FRESH)  # fmt: skip

    assert down.quality is Quality.ERROR
    assert "query failed" in (down.detail or "")
    assert back.get(S.QUEUED_REQUESTS).quality is Quality.FRESH


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never answers: a Prometheus that hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


def test_a_hanging_prometheus_times_out(silent_server: str, namespace: str) -> None:
    source = source_for(silent_server, SourceConfig(timeout_s=0.5))
    queries = pools(policy(namespace))

    seen = source.observe(queries, now())

    signal = seen[queries[0].key].get(S.QUEUED_REQUESTS)
    assert signal.quality in (Quality.ERROR, Quality.EMPTY)
    assert all(s.quality is not Quality.FRESH for p in seen.values() for s in p.signals.values())


def test_a_query_prometheus_rejects_is_an_error(
    source: PrometheusSource, fleet: FakeFleet, namespace: str
) -> None:
    broken = custom({"queuedRequests": "sum by ({{by}}) (rate(vllm:num_requests_waiting{{sel}}))"})
    queries = pools(policy(namespace, patch=broken))

    signal = source.observe(queries, now())[queries[0].key].get(S.QUEUED_REQUESTS)

    assert signal.quality is Quality.ERROR
    assert "400" in (signal.detail or "")


def test_custom_queries_are_checked_when_a_policy_is_saved(
    source: PrometheusSource, fleet: FakeFleet, namespace: str
) -> None:
    vllm_pod(fleet, namespace, "llama-prefill-0", P)
    eventually(lambda: source.observe(pools(policy(namespace)), now()),
               lambda s: next(iter(s.values())).get(S.QUEUED_REQUESTS).quality
               is Quality.FRESH)  # fmt: skip
    good = "sum by ({{by}}) (vllm:num_requests_waiting{{sel}})"
    # {{by}} is there, but the outer sum() drops the labels that tell pools apart.
    no_labels = "sum(sum by ({{by}}) (vllm:num_requests_waiting{{sel}}))"
    bad = "sum by ({{by}}) (rate(vllm:num_requests_waiting{{sel}}))"

    def check(template: str) -> list[str]:
        patch = custom({"queuedRequests": template})
        return [
            f"{e.field}: {e.message}" for e in source.check_queries(policy(namespace, patch=patch))
        ]

    assert check(good) == []
    assert "Prometheus refuses it" in check(bad)[0]
    assert "lacks the pool labels ['namespace', 'role']" in check(no_labels)[0]


def test_custom_queries_cannot_be_checked_without_prometheus(
    silent_server: str, namespace: str
) -> None:
    source = source_for(silent_server, SourceConfig(timeout_s=0.3))
    patch = custom({"queuedRequests": "sum by ({{by}}) (x{{sel}})"})

    with pytest.raises(Unavailable):
        source.check_queries(policy(namespace, patch=patch))


def test_history_is_read_in_chunks(
    source: PrometheusSource, fleet: FakeFleet, namespace: str, live_prometheus: PrometheusServer
) -> None:
    pod = vllm_pod(fleet, namespace, "llama-prefill-0", P)
    pod.set("vllm:num_requests_waiting", 6)
    queries = pools(policy(namespace))
    eventually(lambda: source.observe(queries, now())[queries[0].key],
               lambda s: s.get(S.QUEUED_REQUESTS).value == 6)  # fmt: skip
    for _ in range(3):  # a few seconds of history (the query API counts whole seconds)
        live_prometheus.wait_for_scrape()
    end = now()
    before = source.requests

    history = source.history(queries, S.QUEUED_REQUESTS, end - timedelta(seconds=6), end,
                             step_s=1, max_points=3)  # fmt: skip

    points = history[queries[0].key]
    assert points, (history, end, source.requests - before)
    assert points[-1][1] == 6
    assert [t for t, _ in points] == sorted(t for t, _ in points)
    assert source.requests - before >= 2  # several chunks


def test_gpu_utilization_is_matched_by_pod_name(
    source: PrometheusSource, fleet: FakeFleet, namespace: str
) -> None:
    # Pods of a scale target are named after it: the policy's prefill target is "prefill".
    vllm_pod(fleet, namespace, "prefill-6d4f9-x2x8k", P)
    for gpu, value in (("0", 80.0), ("1", 40.0)):
        fleet.add_pod(engine="dcgm", namespace=namespace, pod="prefill-6d4f9-x2x8k",
                      labels={"gpu": gpu}).set("DCGM_FI_DEV_GPU_UTIL", value)  # fmt: skip
    fleet.add_pod(engine="dcgm", namespace=namespace, pod="decode-55c7b-k9qz2",
                  labels={"gpu": "0"}).set("DCGM_FI_DEV_GPU_UTIL", 10.0)  # fmt: skip
    queries = pools(policy(namespace))

    seen = eventually(lambda: source.observe(queries, now())[queries[0].key],
                      lambda s: s.get(S.GPU_UTILIZATION).value is not None)  # fmt: skip

    assert seen.get(S.GPU_UTILIZATION).value == pytest.approx(0.6)


def test_pools_are_keyed_by_policy(namespace: str) -> None:
    query = PoolQuery.of(policy(namespace), P)

    assert query.key == PoolKey(namespace, "llama", P)
    assert query.ttft_quantile == 0.9


def test_an_engine_without_a_preset_fails_alone(
    source: PrometheusSource, fleet: FakeFleet, namespace: str
) -> None:
    vllm_pod(fleet, namespace, "llama-prefill-0", P).set("vllm:num_requests_waiting", 1)
    queries = pools(policy(namespace), policy(namespace, "trt", {"spec": {"engine": "trtllm"}}))

    seen = eventually(lambda: source.observe(queries, now()),
                      lambda s: s[queries[0].key].get(S.QUEUED_REQUESTS).value == 1)  # fmt: skip

    trt = seen[queries[2].key].get(S.QUEUED_REQUESTS)
    assert trt.quality is Quality.ERROR
    assert "no metric preset for engine trtllm" in (trt.detail or "")
    assert source.problems(["trtllm"]) == ["trtllm: no metric preset; use engine dynamo or custom"]


def test_problems_before_any_probe_say_so(silent_server: str) -> None:
    source = source_for(silent_server, SourceConfig(timeout_s=0.3))

    assert source.problems(["vllm"]) == [
        "metric names not probed yet (Prometheus not reached so far)"
    ]

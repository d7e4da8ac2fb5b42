"""One collection of every pool's signals from a real Prometheus: wall time and requests.

Starts Debian's Prometheus binary scraping a fake fleet of vLLM servers (one per pool,
labelled with its role and model; gauges and counters, and the TTFT histogram unless
``--no-histograms``, or on every Nth model with ``--ttft-every N``), then times
``PrometheusSource.observe`` for all pools at once,
for two fleet sizes, to show that the number of HTTP requests does not grow with the
number of pools. A benchmark, not a test: it prints figures.

    .venv/bin/python bench/metrics.py [--pools 1000] [--collections 10]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from prometheus_api_client import PrometheusConnect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the fleet lives in tests/

from pdscaler.domain.policy import Role, parse_policy
from pdscaler.domain.signals import PoolQuery, Quality
from pdscaler.metrics.prometheus import PrometheusSource, SourceConfig
from tests.factories import policy_doc
from tests.fleet import FakeFleet
from tests.prometheus import PrometheusServer

NS = "bench"
HISTOGRAMS = (
    "vllm:inter_token_latency_seconds", "vllm:request_prompt_tokens",
    "vllm:request_generation_tokens", "vllm:request_queue_time_seconds",
)  # fmt: skip


def main() -> int:
    args = _args()
    rng = random.Random(5)
    ttft = ("vllm:time_to_first_token_seconds",)
    with tempfile.TemporaryDirectory() as data, FakeFleet() as fleet:
        for i in range(args.pools // 2):
            for role in Role:
                pod = fleet.add_pod(engine="vllm", namespace=NS, pod=f"m{i}-{role.value}-0",
                                    labels={"role": role.value, "model_name": f"m{i}"})  # fmt: skip
                with_ttft = not args.no_histograms and i % args.ttft_every == 0
                for name in HISTOGRAMS + (() if with_ttft else ttft):
                    pod.hide(name)
                pod.set("vllm:num_requests_waiting", rng.randrange(20))
                pod.set("vllm:num_requests_running", rng.randrange(200))
                pod.set("vllm:kv_cache_usage_perc", rng.random())
        server = PrometheusServer(targets=[fleet.target], data_dir=Path(data))
        with server:
            server.wait_ready()
            server.wait_scraping()
            series = server.query('count({__name__=~"vllm:.*"})')[0]["value"][1]
            for _ in range(12):  # rates need a window of samples
                server.wait_for_scrape()
            source = PrometheusSource(
                PrometheusConnect(url=server.url, timeout=10),
                SourceConfig(rate_window_s=10, stale_after_s=30, timeout_s=10),
            )
            print(f"metrics  fleet: {args.pools:,} pools, {int(series):,} series, "
                  f"Prometheus on loopback, {args.collections} collections each")  # fmt: skip
            for pools in (args.pools // 10, args.pools):
                _measure(source, pools, args.collections)
    return 0


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", type=int, default=1000)
    parser.add_argument("--collections", type=int, default=10)
    parser.add_argument("--no-histograms", action="store_true", help="no TTFT histograms")
    parser.add_argument("--ttft-every", type=int, default=1,
                        help="a TTFT histogram on the servers of every Nth model only")  # fmt: skip
    return parser.parse_args()


def _queries(pools: int) -> list[PoolQuery]:
    queries = []
    for i in range(pools // 2):
        selector = {"prefill": {"role": "prefill", "model_name": f"m{i}"},
                    "decode": {"role": "decode", "model_name": f"m{i}"}}  # fmt: skip
        doc = policy_doc({"spec": {
            "prefill": {"metricsSelector": selector["prefill"],
                        "metrics": [{"type": "QueuedRequests", "targetPerReplica": 4},
                                    {"type": "TTFT", "quantile": 0.9}]},
            "decode": {"metricsSelector": selector["decode"]}}},
            name=f"m{i}", namespace=NS)  # fmt: skip
        policy = parse_policy(doc)
        queries += [PoolQuery.of(policy, role) for role in Role]
    return queries


def _measure(source: PrometheusSource, pools: int, collections: int) -> None:
    queries = _queries(pools)
    source.observe(queries, datetime.now(UTC))  # probes the metric names once
    walls, requests, fresh = [], [], 0
    for _ in range(collections):
        before = source.requests
        started = time.perf_counter()
        seen = source.observe(queries, datetime.now(UTC))
        walls.append(time.perf_counter() - started)
        requests.append(source.requests - before)
        fresh = sum(
            1 for signals in seen.values() for s in signals.signals.values()
            if s.quality is Quality.FRESH
        )  # fmt: skip
    print(f"  {pools:>5,} pools: wall median {statistics.median(walls) * 1000:.0f} ms, "
          f"max {max(walls) * 1000:.0f} ms; {requests[-1]} HTTP requests per collection; "
          f"{fresh:,} fresh signals")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

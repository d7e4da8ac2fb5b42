"""bench/api_load.py end to end, at a tiny size: the service starts, both phases run, the
load is answered and the ticks are read back from /metrics. Behaviour only, no timings."""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.conftest import REPO, TempPostgres

SCRIPT = REPO / "bench" / "api_load.py"


@pytest.fixture(scope="module")
def api_load() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("api_load", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


@pytest.mark.postgres
def test_both_phases_run_and_the_load_is_answered(
    api_load: ModuleType, temp_postgres: TempPostgres
) -> None:
    options = api_load.Options(
        policies=3, seconds=2.0, idle_seconds=2.0, warmup_seconds=1.0, interval_s=1
    )

    result = api_load.measure(options, temp_postgres.create())

    assert result.storage == "Postgres"
    assert len(result.samples) > 0
    assert {s.kind for s in result.samples} >= {"decisions", "healthz"}
    assert [s for s in result.samples if s.status >= 500 or s.status == 0] == []
    assert result.idle.durations_s, "no tick read in the phase without load"
    assert result.loaded.durations_s, "no tick read in the phase under load"
    assert result.idle.ticks == len(result.idle.durations_s)
    assert all(d > 0 for d in result.idle.durations_s + result.loaded.durations_s)
    assert not math.isnan(result.loaded.histogram_quantile(0.5))
    text = api_load.report(result)
    for row in ("without load", "under load", "ratio"):
        assert row in text


def test_the_tick_histogram_is_read_from_the_exposition(api_load: ModuleType) -> None:
    exposition = "\n".join([
        "# TYPE pdscaler_tick_duration_seconds histogram",
        'pdscaler_tick_duration_seconds_bucket{le="0.1"} 1.0',
        'pdscaler_tick_duration_seconds_bucket{le="0.5"} 3.0',
        'pdscaler_tick_duration_seconds_bucket{le="+Inf"} 4.0',
        "pdscaler_tick_duration_seconds_count 4.0",
        "pdscaler_tick_duration_seconds_sum 1.25",
        "process_cpu_seconds_total 7.5",
    ])  # fmt: skip

    found = api_load.parse_histogram(exposition)

    assert (found.count, found.sum_s, found.cpu_s) == (4.0, 1.25, 7.5)
    assert found.buckets == ((0.1, 1.0), (0.5, 3.0), (math.inf, 4.0))


def test_quantiles_interpolate_within_a_bucket_as_prometheus_does(api_load: ModuleType) -> None:
    empty = api_load.Histogram(0, 0.0, ((0.1, 0.0), (0.5, 0.0), (math.inf, 0.0)), 0.0)
    later = api_load.Histogram(4, 1.0, ((0.1, 2.0), (0.5, 4.0), (math.inf, 4.0)), 0.0)
    phase = api_load.TickPhase(10.0, empty, later)

    assert phase.histogram_quantile(0.5) == pytest.approx(0.1)
    assert phase.histogram_quantile(0.75) == pytest.approx(0.3)


def test_wrk_summary_is_parsed(api_load: ModuleType) -> None:
    output = """Running 1m test @ http://127.0.0.1:8080/v1/decisions?limit=100
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   120.50ms   30.10ms   1.20s    75.00%
    Req/Sec    80.00     10.00   100.00     70.00%
  Latency Distribution
     50%  110.00ms
     75%  130.00ms
     90%  160.00ms
     99%  850.00us
  4800 requests in 1.00m, 480.00MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 3
Requests/sec:     79.95
Transfer/sec:      8.00MB
"""

    found = api_load.parse_wrk(output)

    assert found == {"max_ms": 1200.0, "p50_ms": 110.0, "p99_ms": 0.85, "requests": 4800.0,
                     "errors": 6.0, "rps": 79.95}  # fmt: skip

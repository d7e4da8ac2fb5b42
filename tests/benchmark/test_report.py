"""Report metrics computed on a small handcrafted replay."""

from __future__ import annotations

import math

import pytest

from pdscaler.benchmark.replay import Replay, Sample
from pdscaler.benchmark.report import compare, format_table, measure, percentile
from pdscaler.benchmark.sizing import Slo
from pdscaler.domain.policy import Role
from pdscaler.sim.cluster import Outcome
from pdscaler.sim.traces import Request

P, D = Role.PREFILL, Role.DECODE
SLO = Slo(ttft_ms=500, itl_ms=30)


def outcome(ttft_s: float, tpot_s: float, output_tokens: int = 11, done: bool = True) -> Outcome:
    """A request that arrived at 0 with the given TTFT and time per output token."""
    o = Outcome(Request(0.0, 100, output_tokens), first_token_s=ttft_s)
    if done:
        o.done_s = ttft_s + tpot_s * (output_tokens - 1)
    return o


def samples(prefill: list[int], decode: list[int]) -> list[Sample]:
    return [Sample(5.0 * (i + 1), 1.0, {P: p, D: d})
            for i, (p, d) in enumerate(zip(prefill, decode, strict=True))]  # fmt: skip


@pytest.fixture
def handmade() -> Replay:
    outcomes = [
        outcome(0.1, 0.010),  # meets both
        outcome(0.2, 0.020),  # meets both
        outcome(0.6, 0.010),  # TTFT over 500 ms
        outcome(0.3, 0.040),  # ITL over 30 ms
        outcome(0.5, 0.025),  # exactly at the TTFT SLO: meets it
        outcome(1.0, 0.0, done=False),  # started, never finished: dropped
        Outcome(Request(0.0, 100, 5)),  # never started: dropped
    ]
    return Replay(
        name="handmade",
        outcomes=outcomes,
        gpu_seconds={P: 3600.0, D: 7200.0},
        # prefill: up, up, down, down, up -> 2 reversals; decode: flat then down -> 0
        timeline=samples([1, 2, 3, 2, 1, 2, 2, 2], [4, 4, 4, 4, 3, 3, 3, 3]),
        span_s=1800.0,
    )


def test_attainment_counts_both_slos_and_dropped_requests(handmade: Replay) -> None:
    m = measure(handmade, SLO, lower_bound_gpu_hours=1.5)

    assert m.requests == 7
    assert m.attainment == pytest.approx(3 / 7)
    assert m.ttft_attainment == pytest.approx(4 / 7)  # the unstarted and the 0.6 s and 1 s miss
    assert m.itl_attainment == pytest.approx(4 / 7)
    assert m.dropped == 2


def test_gpu_hours_and_ratios(handmade: Replay) -> None:
    m = measure(handmade, SLO, lower_bound_gpu_hours=1.5)

    assert m.gpu_hours == pytest.approx(3.0)
    assert m.gpu_hours_by_pool == {"prefill": pytest.approx(1.0), "decode": pytest.approx(2.0)}
    assert m.vs_lower_bound == pytest.approx(2.0)
    assert m.vs_static_peak is None

    cheaper = measure(Replay("static-peak", [], {P: 3600.0 * 4, D: 3600.0 * 2}), SLO, 1.5)
    ranked = compare([m, cheaper], "static-peak")
    assert ranked[0].vs_static_peak == pytest.approx(0.5)
    assert ranked[1].vs_static_peak == pytest.approx(1.0)


def test_reversals_per_pool_hour(handmade: Replay) -> None:
    m = measure(handmade, SLO, lower_bound_gpu_hours=1.5)

    assert m.reversals == {"prefill": 2, "decode": 0}
    assert m.reversals_per_pool_hour == pytest.approx(2 / (2 * 0.5))  # 2 pools, half an hour


def test_percentiles_are_nearest_rank(handmade: Replay) -> None:
    m = measure(handmade, SLO, lower_bound_gpu_hours=1.5)

    # TTFTs of the six started requests: 100 200 300 500 600 1000 ms
    assert m.ttft_ms.p50 == pytest.approx(300)
    assert m.ttft_ms.p99 == pytest.approx(1000)
    # ITLs of the five finished: 10 10 20 25 40 ms
    assert m.itl_ms.p50 == pytest.approx(20)
    assert m.itl_ms.p99 == pytest.approx(40)
    assert percentile([], 0.5) != percentile([], 0.5)  # NaN with no values
    assert percentile([3, 1, 2, 4], 0.5) == 2
    assert percentile([3, 1, 2, 4], 0.75) == 3


def test_the_table_has_a_line_per_policy(handmade: Replay) -> None:
    m = measure(handmade, SLO, lower_bound_gpu_hours=1.5)
    empty = measure(Replay("idle", [], {P: 0.0, D: 0.0}), SLO, 1.5)

    lines = format_table([m, empty]).splitlines()

    assert lines[0].split()[:3] == ["policy", "attain", "GPU-h"]
    assert lines[1].split()[:3] == ["handmade", "42.9%", "3.00"]
    assert lines[2].split()[0] == "idle"
    assert "-/-" in lines[2]  # no latencies to show
    assert math.isnan(empty.ttft_ms.p50)

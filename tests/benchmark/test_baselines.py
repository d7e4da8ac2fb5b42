"""Each baseline autoscaler behaves as its original does, on the real simulated cluster."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest

from pdscaler.benchmark.baselines import (
    DynamoLike,
    Every,
    HpaLike,
    KedaLike,
    StaticPeak,
    dynamo_replicas,
    observe_interval,
)
from pdscaler.benchmark.hpa import external_average_replicas, hpa_metric_replicas
from pdscaler.benchmark.replay import Replay, replay
from pdscaler.benchmark.sizing import CHAT_SLO
from pdscaler.domain.policy import Role
from pdscaler.domain.profile import PerfProfile
from pdscaler.sim.cluster import Cluster, SimConfig
from pdscaler.sim.traces import Request

P, D = Role.PREFILL, Role.DECODE


def steady(rate_per_s: float, start_s: float, end_s: float, isl: int, osl: int) -> list[Request]:
    count = round((end_s - start_s) * rate_per_s)
    return [Request(start_s + i / rate_per_s, isl, osl) for i in range(count)]


def sizes(result: Replay, role: Role) -> list[tuple[float, int]]:
    return [(s.t, s.replicas[role]) for s in result.timeline]


def changes(result: Replay, role: Role) -> list[tuple[float, int, int]]:
    """(time first seen, from, to) of every change of the pool's size."""
    timeline = sizes(result, role)
    return [(t, a, b) for (_, a), (t, b) in pairwise(timeline) if a != b]


# -- static-peak ---------------------------------------------------------------------------


def test_static_peak_never_changes_size(config: SimConfig) -> None:
    trace = steady(40, 0, 120, 2000, 100) + steady(2, 120, 300, 500, 50)

    result = replay("static-peak", trace, config, {P: 3, D: 2}, StaticPeak())

    assert {n for _, n in sizes(result, P)} == {3}
    assert {n for _, n in sizes(result, D)} == {2}


# -- HPA-like ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "ratio", "ready", "missing", "current", "expected"),
    [
        ("within tolerance holds", 1.08, 4, 0, 4, 4),
        ("over target grows by the ratio", 1.5, 4, 0, 4, 6),
        ("under target shrinks by the ratio", 0.5, 4, 0, 4, 2),
        ("starting pods count as idle on the way up", 2.0, 2, 2, 4, 4),
        ("starting pods count as at target on the way down", 0.25, 2, 2, 4, 3),
        ("more starting pods hold a scale-up", 1.5, 2, 3, 5, 5),
    ],
)
def test_hpa_replica_math(
    name: str, ratio: float, ready: int, missing: int, current: int, expected: int
) -> None:
    assert hpa_metric_replicas(ratio, ready, missing, current, 0.1) == expected, name


def test_hpa_scales_up_under_a_burst_and_down_only_after_its_window(config: SimConfig) -> None:
    # Quiet, then two minutes of long prompts that one prefill replica cannot keep up with.
    trace = steady(2, 0, 60, 500, 20) + steady(60, 60, 180, 3000, 20) + steady(2, 180, 900, 500, 20)
    hpa = HpaLike(queue_target=4, max_replicas=32)

    result = replay("hpa", trace, config, {P: 1, D: 1}, hpa, drain_s=0.0)

    moves = changes(result, P)
    ups = [(t, a, b) for t, a, b in moves if b > a]
    downs = [(t, a, b) for t, a, b in moves if b < a]
    assert ups
    assert 60 < ups[0][0] <= 60 + 2 * 15 + 5  # within two sync periods of the burst
    assert max(b for _, _, b in ups) > 4
    assert downs, "the pool never came down after the burst"
    last_up = max(t for t, _, _ in ups)
    assert downs[0][0] >= last_up + 300  # the scale-down window
    assert all(t % 15 == 5 for t, _, _ in moves)  # decided every 15 s, seen 5 s later


def test_hpa_holds_a_new_pool_for_its_scale_down_window(config: SimConfig) -> None:
    # Almost no load: the decode pool is far over-provisioned from the start, yet HPA
    # counts the current size as a recommendation when it starts.
    trace = steady(1, 0, 600, 200, 20)

    result = replay("hpa", trace, config, {P: 1, D: 4}, HpaLike(4, 32), drain_s=0.0)

    first_down = changes(result, D)[0]
    assert first_down[1:] == (4, 1)
    assert first_down[0] >= 300


# -- KEDA-like -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "threshold", "current", "expected"),
    [(100, 10, 4, 10), (41, 10, 4, 4), (44, 10, 4, 4), (45, 10, 4, 5), (0, 10, 4, 0)],
)
def test_keda_replicas_are_the_metric_over_the_threshold(
    metric: float, threshold: float, current: int, expected: int
) -> None:
    assert external_average_replicas(metric, threshold, current, 0.1) == expected


def test_keda_follows_the_threshold(config: SimConfig) -> None:
    # 400 long prompts at once: one prefill replica works through them two a batch.
    cluster = Cluster(config, [Request(0.0, 8000, 10)] * 400, {P: 1, D: 1})
    keda = KedaLike(prefill_threshold=100, decode_threshold=100, max_replicas=32)
    cluster.run_until(15.0)
    waiting, _ = cluster.queued(P)
    expected = math.ceil(waiting / 100)
    assert 1 < expected < 1 + 4  # within HPA's default rate limit: +4 pods per 15 s

    keda(cluster, 15.0)  # an HPA sync (and no poll yet)

    ready, pending, _ = cluster.counts(P)
    assert ready + pending == expected


def test_keda_goes_to_zero_after_its_cooldown_and_activates_again(config: SimConfig) -> None:
    trace = [Request(0.0, 100, 5), Request(700.0, 100, 5)]
    cluster = Cluster(config, trace, {P: 1, D: 1})
    keda = KedaLike(prefill_threshold=8, decode_threshold=100, max_replicas=32)
    size = {}
    for t in range(5, 800, 5):
        cluster.run_until(float(t))
        keda(cluster, float(t))
        size[t] = sum(cluster.counts(P)[:2])

    assert size[270] == 1  # no waiting request since the start, but within the cooldown
    assert size[300] == 0  # the first poll 300 s after the last active one
    assert size[725] == 1  # a request waits at 700 s: the next poll (720 s) activates


# -- Dynamo-like ---------------------------------------------------------------------------


def test_dynamo_formula(profile: PerfProfile) -> None:
    load = observe_interval(Cluster(SimConfig(profile), [], {P: 1, D: 1}), 0.0, 180.0)
    assert not load.valid()  # no traffic: Dynamo skips the interval

    from pdscaler.benchmark.baselines import IntervalMetrics

    load = IntervalMetrics(requests=1800, isl=3000, osl=150, ttft_ms=80, itl_ms=20, duration_s=4)
    prefill, decode = dynamo_replicas(profile, load, interval_s=180.0, itl_slo_ms=30.0)

    prefill_tokens_per_s = 1800 * 3000 / 180
    assert prefill == math.ceil(prefill_tokens_per_s / profile.prefill_tokens_per_s(3000))
    capacity = profile.decode_capacity(3000 + 75, 30.0)
    assert capacity is not None
    assert decode == math.ceil(1800 * 150 / 180 / capacity.tokens_per_s)


def test_dynamo_changes_size_at_most_every_adjustment_interval(
    profile: PerfProfile, config: SimConfig
) -> None:
    trace = (
        steady(5, 0, 200, 1000, 100)
        + steady(60, 200, 500, 3000, 200)
        + steady(5, 500, 800, 1000, 100)
    )

    result = replay("dynamo", trace, config, {P: 1, D: 1}, DynamoLike(profile, CHAT_SLO, 32))

    times = sorted({t for role in Role for t, _, _ in changes(result, role)})
    assert times, "the planner never resized"
    assert times[0] >= 180
    assert all(b - a >= 180 for a, b in pairwise(times))


def test_every_is_due_once_per_period() -> None:
    every = Every(15.0)
    due = [t for t in range(5, 65, 5) if every.due(float(t))]
    assert due == [15, 30, 45, 60]

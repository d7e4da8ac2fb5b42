"""The simulated cluster against the profile it runs on, and its bookkeeping under scaling.

Fidelity: one request alone sees the profile's prefill time plus the KV transfer as TTFT; a
decode replica holding a fixed batch produces tokens at the profile's ITL. Bookkeeping:
every request finishes exactly once through any sequence of scale-ups and scale-downs,
draining replicas finish their work, and GPU time is counted from asked-for to freed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

import pytest

from pdscaler.domain.policy import Role
from pdscaler.domain.profile import PerfProfile
from pdscaler.profiles import DEFAULT_PROFILE, load_profile
from pdscaler.sim.cluster import Cluster, SimConfig
from pdscaler.sim.traces import Request, load_trace, scale_rate, window

BUNDLED = Path(str(files("pdscaler.sim") / "data" / "azure-conv-10min.csv"))
FIDELITY = 0.05  # the simulator reproduces the profile within 5%
P, D = Role.PREFILL, Role.DECODE


@pytest.fixture(scope="module")
def profile() -> PerfProfile:
    return load_profile(DEFAULT_PROFILE)


def transfer_s(config: SimConfig, input_tokens: int) -> float:
    """Seconds to move a prompt's KV cache from prefill to decode over the link."""
    return input_tokens * config.kv_bytes_per_token * 8 / (config.link_gbps * 1e9)


def run_to_end(cluster: Cluster, step_s: float = 1.0, limit_s: float = 100_000.0) -> None:
    while not cluster.done() and cluster.now < limit_s:
        cluster.run_until(cluster.now + step_s)


def burst(count: int, input_tokens: int, output_tokens: int) -> list[Request]:
    return [Request(0.0, input_tokens, output_tokens) for _ in range(count)]


def assert_each_finished_once(cluster: Cluster, trace: Sequence[Request]) -> None:
    finished = cluster.finished
    assert len(finished) == len(trace)
    assert len({id(o) for o in finished}) == len(finished)
    assert sorted(o.request for o in finished) == sorted(trace)
    for o in finished:
        assert math.isfinite(o.first_token_s)
        assert math.isfinite(o.done_s)
        assert o.request.arrival_s <= o.first_token_s <= o.done_s


# -- fidelity to the profile ---------------------------------------------------------------


@pytest.mark.parametrize("link_gbps", [400.0, 25.0])
@pytest.mark.parametrize(
    "input_tokens",
    [50, 100, 1_117, 3_000, 8_236, 16_372, 20_000, 30_000],  # measured: 100 … 16,372
)
def test_a_lone_request_waits_the_prefill_time_and_the_kv_transfer(
    profile: PerfProfile, input_tokens: int, link_gbps: float
) -> None:
    config = SimConfig(profile=profile, link_gbps=link_gbps)
    cluster = Cluster(config, [Request(0.0, input_tokens, 1)], {P: 1, D: 1})

    run_to_end(cluster)

    expected_s = profile.prefill_ms(input_tokens) / 1000.0 + transfer_s(config, input_tokens)
    assert cluster.finished[0].ttft_s == pytest.approx(expected_s, rel=FIDELITY)


@pytest.mark.parametrize(
    ("batch", "input_tokens", "output_tokens"),
    [
        (1, 3_000, 100),
        (8, 3_000, 100),
        (32, 2_997, 100),
        (64, 1_000, 50),
        (100, 350, 30),
        (16, 8_000, 100),
        (40, 12_000, 60),
    ],
)
def test_a_fixed_decode_batch_runs_at_the_profiles_itl(
    profile: PerfProfile, batch: int, input_tokens: int, output_tokens: int
) -> None:
    # One prefill replica per request: all prefills end together and the batch joins decode
    # at once, so it stays whole until it finishes together. Outputs are short against the
    # prompts, so the context hardly grows.
    trace = burst(batch, input_tokens, output_tokens)
    cluster = Cluster(SimConfig(profile=profile), trace, {P: batch, D: 1})

    run_to_end(cluster)

    assert len({o.decode_replica for o in cluster.finished}) == 1
    assert len({o.first_token_s for o in cluster.finished}) == 1
    mean_context = input_tokens + (output_tokens - 1) / 2
    expected_s = profile.itl_ms(mean_context, batch) / 1000.0
    for outcome in cluster.finished:
        assert outcome.tpot_s == pytest.approx(expected_s, rel=FIDELITY)


def test_a_fixed_decode_batch_with_long_outputs_runs_at_the_itl_of_its_mean_context(
    profile: PerfProfile,
) -> None:
    batch, input_tokens, output_tokens = 32, 2_997, 2_000
    cluster = Cluster(
        SimConfig(profile=profile), burst(batch, input_tokens, output_tokens), {P: batch, D: 1}
    )

    run_to_end(cluster)

    mean_context = input_tokens + (output_tokens - 1) / 2
    expected_s = profile.itl_ms(mean_context, batch) / 1000.0
    assert cluster.finished[0].tpot_s == pytest.approx(expected_s, rel=FIDELITY)


# -- queueing and KV capacity --------------------------------------------------------------


def test_requests_queued_behind_one_prefill_replica_count_the_wait_in_ttft(
    profile: PerfProfile,
) -> None:
    input_tokens = 4_000
    config = SimConfig(profile=profile, prefill_token_budget=input_tokens)  # one per batch
    cluster = Cluster(config, burst(10, input_tokens, 2), {P: 1, D: 4})

    run_to_end(cluster)

    prefill_s = profile.prefill_ms(input_tokens) / 1000.0
    ttfts = sorted(o.ttft_s for o in cluster.finished)
    for place, ttft in enumerate(ttfts, start=1):
        expected_s = place * prefill_s + transfer_s(config, input_tokens)
        assert ttft == pytest.approx(expected_s, rel=FIDELITY)


def test_a_burst_on_one_prefill_replica_delays_the_later_requests(
    profile: PerfProfile,
) -> None:
    trace = [Request(i * 0.001, 2_000, 2) for i in range(40)]
    cluster = Cluster(SimConfig(profile=profile), trace, {P: 1, D: 2})

    run_to_end(cluster)

    by_arrival = sorted(cluster.finished, key=lambda o: o.request.arrival_s)
    first_tokens = [o.first_token_s for o in by_arrival]
    assert first_tokens == sorted(first_tokens)  # served in arrival order
    ttfts = [o.ttft_s for o in by_arrival]
    assert sum(ttfts[-10:]) > 3 * sum(ttfts[:10])
    assert ttfts[-1] > 5 * ttfts[0]


def test_a_decode_replica_admits_only_what_its_kv_cache_holds(profile: PerfProfile) -> None:
    capacity, input_tokens, output_tokens = 4_000, 1_000, 20
    fits = capacity // (input_tokens + output_tokens)  # 3
    config = SimConfig(profile=profile, kv_capacity_tokens=capacity)
    trace = burst(12, input_tokens, output_tokens)
    cluster = Cluster(config, trace, {P: 12, D: 1})

    most_running, most_waiting, highest_kv = 0, 0, 0.0
    while not cluster.done() and cluster.now < 60.0:
        cluster.run_until(cluster.now + 0.002)
        most_running = max(most_running, cluster.running(D))
        most_waiting = max(most_waiting, cluster.queued(D)[0])
        highest_kv = max(highest_kv, cluster.kv_utilization())

    assert most_running == fits
    assert most_waiting == 12 - fits
    assert highest_kv <= 1.0
    assert_each_finished_once(cluster, trace)


def test_a_decode_replicas_kv_cache_never_holds_more_than_its_capacity(
    profile: PerfProfile,
) -> None:
    config = SimConfig(profile=profile, kv_capacity_tokens=1_000)
    trace = burst(2, 100, 800)  # each grows to 900 tokens; both join at 100 + 900 = 1000
    cluster = Cluster(config, trace, {P: 2, D: 1})

    highest_kv = 0.0
    while not cluster.done() and cluster.now < 60.0:
        cluster.run_until(cluster.now + 0.05)
        highest_kv = max(highest_kv, cluster.kv_utilization())

    assert highest_kv <= 1.0


# -- scaling -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def five_busy_minutes() -> list[Request]:
    """Five minutes of the Azure conversation trace at five times its rate, with bursts
    of long prompts just before the prefill pool is scaled down (so that it is busy)."""
    azure = scale_rate(window(load_trace(BUNDLED), 0.0, 300.0), 5)
    long_prompts = [Request(at, 8_000, 100) for at in (89.0, 199.0) for _ in range(50)]
    return sorted(azure + long_prompts)


# (time, role, replicas asked for, (ready, pending) right after); the cold start is 30 s.
SCALING = [
    (20.0, P, 4, (2, 2)),
    (20.0, D, 4, (2, 2)),
    (40.0, P, 2, (2, 0)),  # the two pending prefill replicas go before they are ready
    (70.0, D, 1, (1, 0)),  # three ready, busy decode replicas drain
    (90.0, P, 1, (1, 0)),  # during a burst of long prompts: a busy one drains
    (100.0, D, 3, (1, 2)),
    (110.0, D, 2, (1, 1)),  # one pending goes
    (150.0, P, 4, (1, 3)),
    (170.0, D, 1, (1, 0)),
    (195.0, P, 6, (4, 2)),
    (200.0, P, 1, (1, 0)),  # the two pending go first, then three ready (bursting) ones
    (250.0, D, 4, (1, 3)),
    (260.0, D, 1, (1, 0)),
]


def test_every_request_finishes_once_through_scale_ups_and_scale_downs(
    profile: PerfProfile, five_busy_minutes: list[Request]
) -> None:
    trace = five_busy_minutes
    cluster = Cluster(SimConfig(profile=profile, cold_start_s=30.0), trace, {P: 2, D: 2})

    drained_busy = set()
    for at, role, replicas, (ready, pending) in SCALING:
        cluster.run_until(at)
        cluster.set_replicas(role, replicas)
        assert cluster.counts(role)[:2] == (ready, pending), (at, role)
        if cluster.counts(role)[2]:
            drained_busy.add(role)
    run_to_end(cluster, step_s=5.0)

    assert len(trace) > 7_000
    assert drained_busy == {P, D}  # the scenario did take busy replicas away
    assert cluster.counts(P) == (1, 0, 0)
    assert cluster.counts(D) == (1, 0, 0)
    assert_each_finished_once(cluster, trace)
    assert len(cluster.outcomes) == len(trace)


def test_requests_on_a_draining_decode_replica_finish(profile: PerfProfile) -> None:
    trace = burst(20, 500, 3_000)
    cluster = Cluster(SimConfig(profile=profile), trace, {P: 4, D: 2})
    cluster.run_until(2.0)
    assert cluster.running(D) == 20
    held = {o.decode_replica for o in cluster.outcomes}
    assert len(held) == 2

    cluster.set_replicas(D, 1)

    assert cluster.counts(D) == (1, 0, 1)
    run_to_end(cluster)
    assert_each_finished_once(cluster, trace)
    assert {o.decode_replica for o in cluster.finished} == held
    assert cluster.counts(D) == (1, 0, 0)


def test_requests_queued_on_a_draining_prefill_replica_finish(profile: PerfProfile) -> None:
    trace = burst(40, 8_000, 2)  # two per prefill batch: a long queue on each replica
    cluster = Cluster(SimConfig(profile=profile), trace, {P: 2, D: 1})
    cluster.run_until(0.5)
    assert cluster.queued(P)[0] > 10

    cluster.set_replicas(P, 1)

    assert cluster.counts(P) == (1, 0, 1)
    run_to_end(cluster, step_s=0.5)
    assert_each_finished_once(cluster, trace)
    assert cluster.counts(P) == (1, 0, 0)


def test_a_drained_pool_is_charged_for_the_one_replica_left(profile: PerfProfile) -> None:
    trace = burst(30, 1_000, 2_000)
    cluster = Cluster(SimConfig(profile=profile), trace, {P: 3, D: 3})
    cluster.run_until(5.0)
    cluster.set_replicas(D, 1)
    cluster.set_replicas(P, 1)
    run_to_end(cluster)
    assert cluster.counts(D) == (1, 0, 0)

    start_s = cluster.now
    before = {role: cluster.gpu_seconds(role) for role in (P, D)}
    cluster.run_until(start_s + 100.0)

    for role in (P, D):
        assert cluster.gpu_seconds(role) - before[role] == pytest.approx(100.0)
    assert before[D] < 3 * start_s  # the drained replicas stopped costing when freed


def test_pending_replicas_are_ready_after_the_cold_start_and_cost_from_being_asked_for(
    profile: PerfProfile,
) -> None:
    config = SimConfig(profile=profile, cold_start_s=60.0)
    cluster = Cluster(config, [Request(500.0, 100, 2)], {P: 1, D: 1})
    cluster.run_until(10.0)

    cluster.set_replicas(P, 3)

    assert cluster.counts(P) == (1, 2, 0)
    cluster.run_until(69.9)
    assert cluster.counts(P) == (1, 2, 0)
    assert cluster.gpu_seconds(P) == pytest.approx(69.9 + 2 * 59.9)
    cluster.run_until(70.0)
    assert cluster.counts(P) == (3, 0, 0)
    cluster.run_until(100.0)
    assert cluster.gpu_seconds(P) == pytest.approx(100.0 + 2 * 90.0)
    assert cluster.gpu_seconds(D) == pytest.approx(100.0)


def test_pending_replicas_removed_before_ready_cost_only_until_removed(
    profile: PerfProfile,
) -> None:
    config = SimConfig(profile=profile, cold_start_s=60.0)
    cluster = Cluster(config, [Request(500.0, 100, 2)], {P: 1, D: 1})
    cluster.run_until(10.0)
    cluster.set_replicas(D, 4)
    cluster.run_until(30.0)

    cluster.set_replicas(D, 2)

    assert cluster.counts(D) == (1, 1, 0)
    cluster.run_until(200.0)
    assert cluster.counts(D) == (2, 0, 0)
    # the one kept: 190 s; the two removed: 20 s each; the initial one: 200 s
    assert cluster.gpu_seconds(D) == pytest.approx(200.0 + 190.0 + 2 * 20.0)


def test_gpu_seconds_count_every_gpu_of_a_replica(profile: PerfProfile) -> None:
    config = SimConfig(profile=profile, gpus_per_replica={P: 2, D: 4})
    cluster = Cluster(config, [Request(0.0, 100, 2)], {P: 1, D: 2})

    cluster.run_until(10.0)

    assert cluster.gpu_seconds(P) == pytest.approx(20.0)
    assert cluster.gpu_seconds(D) == pytest.approx(80.0)


def test_outcomes_of_a_run_are_consistent(profile: PerfProfile) -> None:
    trace = window(load_trace(BUNDLED), 0.0, 60.0)
    cluster = Cluster(SimConfig(profile=profile), trace, {P: 1, D: 1})

    run_to_end(cluster)

    assert_each_finished_once(cluster, trace)
    assert sorted(cluster.first_tokens, key=lambda o: o.first_token_s) == cluster.first_tokens
    done = [o.done_s for o in cluster.finished]
    assert done == sorted(done)

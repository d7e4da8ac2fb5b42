"""decide(): the pure engine, one pair at a time — ratio band, GPU budget, SLO guard,
consolidation and the quality gate."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pdscaler.domain.policy import Role, parse_policy
from pdscaler.domain.reasons import Reason
from pdscaler.domain.signals import PoolSignals, ScaleState, Signal, SignalName
from pdscaler.engine.decide import PairDecision, PoolInput, decide
from pdscaler.engine.history import PoolHistory
from pdscaler.profiles import DEFAULT_PROFILE, load_profile
from tests.factories import policy_doc

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
IMMEDIATE = {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 0},
                          "scaleUp": {"policies": [{"type": "Pods", "value": 100,
                                                    "periodSeconds": 15}]}}}  # fmt: skip


def signals(**values: float | None) -> PoolSignals:
    return PoolSignals({
        SignalName(k): Signal.fresh(v, NOW) if v is not None else Signal.missing()
        for k, v in values.items()
    })  # fmt: skip


@dataclass(frozen=True)
class Pair:
    name: str
    spec: dict[str, Any]
    prefill: tuple[int, dict[str, float | None]]  # (current replicas, signals)
    decode: tuple[int, dict[str, float | None]]
    expected: tuple[int, int]
    reasons: dict[Role, Reason] = field(default_factory=dict)  # the last step's reason


def run(case: Pair) -> PairDecision:
    doc = policy_doc({"spec": {"prefill": {**IMMEDIATE, "maxReplicas": 32},
                               "decode": {**IMMEDIATE, "maxReplicas": 32}}})  # fmt: skip
    doc = policy_doc({**doc, "spec": {**doc["spec"], **case.spec}}) if case.spec else doc
    spec = parse_policy(doc).spec
    inputs = [
        PoolInput(ScaleState(current, current, 0), signals(**values), PoolHistory())
        for current, values in (case.prefill, case.decode)
    ]
    return decide(spec, inputs[0], inputs[1], NOW, max_sample_age_s=60)


KV = "kvCacheUtilization"
QPT = "queuedPrefillTokens"
PAIRS = [
    Pair("independent sizing", {}, (2, {QPT: 65536}), (4, {KV: 0.75}), (4, 4)),
    Pair("ratio band raises the lagging prefill pool",
         {"coordination": {"prefillToDecodeRatio": {"min": 0.5, "max": 2}}},
         (2, {QPT: 16384}), (4, {KV: 1.5}), (4, 8), {Role.PREFILL: Reason.RATIO_BOUND}),
    Pair("ratio band raises the lagging decode pool",
         {"coordination": {"prefillToDecodeRatio": {"min": 0.25, "max": 1}}},
         (2, {QPT: 16384 * 12}), (4, {KV: 0.75}), (12, 12), {Role.DECODE: Reason.RATIO_BOUND}),
    Pair("ratio band holds decode back when prefill is at its max",
         {"prefill": {"maxReplicas": 3}, "coordination": {"prefillToDecodeRatio": {"min": 0.5,
                                                                                  "max": 2}}},
         (2, {QPT: 16384}), (4, {KV: 1.5}), (3, 6), {Role.DECODE: Reason.RATIO_BOUND}),
    Pair("ratio band does not raise a pool whose scale-up is disabled",
         {"prefill": {"behavior": {"scaleUp": {"selectPolicy": "Disabled"}}},
          "coordination": {"prefillToDecodeRatio": {"min": 0.5, "max": 2}}},
         (2, {QPT: 16384}), (4, {KV: 0.75}), (2, 4)),
    Pair("ratio band raises no faster than the rate policies allow",
         {"prefill": {"behavior": {"scaleUp": {"policies": [
             {"type": "Pods", "value": 1, "periodSeconds": 60}]}}},
          "coordination": {"prefillToDecodeRatio": {"min": 1, "max": 2}}},
         (2, {QPT: 16384 * 2}), (4, {KV: 1.5}), (3, 4),
         {Role.PREFILL: Reason.RATIO_BOUND, Role.DECODE: Reason.RATIO_BOUND}),
    Pair("budget covers both", {"coordination": {"gpuBudget": 40}},
         (2, {QPT: 16384 * 8}), (4, {KV: 1.5}), (8, 8), {Role.PREFILL: Reason.WITHIN_BUDGET}),
    Pair("budget short: proportional cut of both increases",
         {"coordination": {"gpuBudget": 12}},
         (2, {QPT: 16384 * 8}), (4, {KV: 1.5}), (6, 6), {Role.PREFILL: Reason.GPU_BUDGET,
                                                         Role.DECODE: Reason.GPU_BUDGET}),
    Pair("budget short: decode first", {"coordination": {"gpuBudget": 12, "priority": "decode"}},
         (2, {QPT: 16384 * 8}), (4, {KV: 1.5}), (4, 8), {Role.PREFILL: Reason.GPU_BUDGET}),
    Pair("budget short: prefill first", {"coordination": {"gpuBudget": 12,
                                                          "priority": "prefill"}},
         (2, {QPT: 16384 * 8}), (4, {KV: 1.5}), (8, 4), {Role.DECODE: Reason.GPU_BUDGET}),
    Pair("budget never shrinks a running pool", {"coordination": {"gpuBudget": 4}},
         (3, {QPT: 16384 * 8}), (3, {KV: 0.75}), (3, 3), {Role.PREFILL: Reason.GPU_BUDGET}),
    Pair("budget counts GPUs per replica",
         {"prefill": {"gpusPerReplica": 4}, "coordination": {"gpuBudget": 24}},
         (2, {QPT: 16384 * 8}), (4, {KV: 0.75}), (5, 4), {Role.PREFILL: Reason.GPU_BUDGET}),
    Pair("TTFT over the SLO forbids a scale-down",
         {}, (4, {QPT: 0, "ttftMs": 850}), (4, {KV: 0.75}), (4, 4),
         {Role.PREFILL: Reason.DESIRED_WITHIN_RANGE}),
    Pair("TTFT far over the SLO forces growth while requests wait",
         {}, (4, {QPT: 16384 * 3, "ttftMs": 2000}), (4, {KV: 0.75}), (5, 4)),
    Pair("TTFT far over the SLO with the queue gone only holds",
         {}, (4, {QPT: 0, "ttftMs": 2000}), (4, {KV: 0.75}), (4, 4),
         {Role.PREFILL: Reason.DESIRED_WITHIN_RANGE}),
    Pair("ITL far over the SLO forces decode growth",
         {}, (4, {QPT: 65536}), (4, {KV: 0.75, "itlMs": 100}), (4, 5)),
    Pair("consolidation keeps survivors under target",
         {}, (4, {QPT: 3 * 16384 * 0.95}), (4, {KV: 0.75}), (4, 4)),
    Pair("consolidation allows a safe scale-down",
         {}, (4, {QPT: 2 * 16384 * 0.8}), (4, {KV: 0.75}), (2, 4)),
    Pair("all metrics missing holds",
         {}, (4, {QPT: None}), (4, {KV: None}), (4, 4)),
]  # fmt: skip


@pytest.mark.parametrize("case", PAIRS, ids=lambda c: c.name)
def test_pairs(case: Pair) -> None:
    pair = run(case)

    assert (pair.prefill.desired_replicas, pair.decode.desired_replicas) == case.expected
    for role, reason in case.reasons.items():
        assert pair.pool(role).steps[-1].reason == reason, pair.pool(role).steps


def test_every_step_says_why() -> None:
    pair = run(PAIRS[1])

    for pool in (pair.prefill, pair.decode):
        assert all(step.reason for step in pool.steps)
        assert pool.steps[0].name == "recommend"
        assert pool.steps[-1].value == pool.desired_replicas


def test_a_stale_sample_is_not_used() -> None:
    spec = parse_policy(policy_doc({"spec": {"prefill": IMMEDIATE}})).spec
    old = PoolSignals({SignalName.QUEUED_PREFILL_TOKENS: Signal.fresh(0, NOW - timedelta(hours=1))})
    fresh = PoolInput(ScaleState(2, 2, 0), signals(kvCacheUtilization=0.75), PoolHistory())

    pair = decide(spec, PoolInput(ScaleState(4, 4, 0), old, PoolHistory()), fresh, NOW,
                  max_sample_age_s=60)  # fmt: skip

    assert pair.prefill.desired_replicas == 4
    assert Reason.METRICS_MISSING in [s.reason for s in pair.prefill.steps]


def test_replicas_on_their_way_hold_back_the_forced_growth() -> None:
    spec = parse_policy(policy_doc()).spec
    prefill = PoolInput(ScaleState(6, 4, 2), signals(**{QPT: 16384 * 3, "ttftMs": 2000}),
                        PoolHistory())  # fmt: skip
    decode = PoolInput(ScaleState(4, 4, 0), signals(**{KV: 0.75}), PoolHistory())

    pair = decide(spec, prefill, decode, NOW, max_sample_age_s=60)

    slo = next(s for s in pair.prefill.steps if s.name == "slo")
    assert (slo.reason, slo.value) == (Reason.SLO_VIOLATED, 6)
    assert "2 replicas on their way" in slo.message
    assert pair.prefill.desired_replicas == 6


def test_a_latency_vote_at_most_doubles_the_pool() -> None:
    spec = parse_policy(policy_doc({"spec": {"prefill": {
        "maxReplicas": 64, "metrics": [{"type": "TTFT", "quantile": 0.9}]}}})).spec  # fmt: skip
    prefill = PoolInput(ScaleState(4, 4, 0), signals(**{QPT: 1000, "ttftMs": 80_000}),
                        PoolHistory())  # fmt: skip
    decode = PoolInput(ScaleState(4, 4, 0), signals(**{KV: 0.75}), PoolHistory())

    pair = decide(spec, prefill, decode, NOW, max_sample_age_s=60)

    assert pair.prefill.steps[0].value == 8  # not 400 (100 times over the SLO)


def _capacity_spec() -> Any:
    capacity = {"type": "Capacity", "profile": DEFAULT_PROFILE}
    return parse_policy(policy_doc({"spec": {
        "slo": {"ttftMs": 300, "itlMs": 25}, "coldStartSeconds": 60,
        "prefill": {"maxReplicas": 64, "metrics": [capacity]},
        "decode": {"maxReplicas": 64, "metrics": [capacity, {"type": "ITL", "quantile": 0.9}]},
    }})).spec  # fmt: skip


def test_decode_is_sized_for_what_prefill_hands_over_before_it_arrives() -> None:
    profile = load_profile(DEFAULT_PROFILE)
    lengths = {"meanInputLength": 1000, "meanOutputLength": 400}
    prefill = PoolInput(ScaleState(4, 4, 0),
                        signals(arrivalRate=100, **lengths, queuedPrefillTokens=0),
                        PoolHistory(), profile)  # fmt: skip
    quiet_decode = signals(outputTokenRate=5000, runningRequests=100, **lengths)
    decode = PoolInput(ScaleState(1, 1, 0), quiet_decode, PoolHistory(), profile)

    pair = decide(_capacity_spec(), prefill, decode, NOW, max_sample_age_s=60)

    first = pair.decode.steps[0]
    assert "incoming from prefill" in first.message
    assert first.value >= math.ceil(100 * 400 / 12_000)  # 40,000 tok/s, not 5,000


def test_a_growing_backlog_counts_as_arrivals_the_pool_cannot_complete() -> None:
    profile = load_profile(DEFAULT_PROFILE)
    spec = _capacity_spec()
    before = PoolHistory(backlog=(NOW - timedelta(seconds=5), 100_000))
    grown = signals(arrivalRate=50, meanInputLength=1000, queuedPrefillTokens=600_000)
    decode = PoolInput(ScaleState(4, 4, 0), signals(kvCacheUtilization=0.5), PoolHistory())

    steady = decide(spec, PoolInput(ScaleState(2, 2, 0), grown, PoolHistory(), profile),
                    decode, NOW, max_sample_age_s=60)  # fmt: skip
    growing = decide(spec, PoolInput(ScaleState(2, 2, 0), grown, before, profile),
                     decode, NOW, max_sample_age_s=60)  # fmt: skip

    # 500,000 tokens in 5 s is 100 more requests/s of 1,000 tokens than were completed.
    assert growing.prefill.steps[0].value > 2 * steady.prefill.steps[0].value
    assert growing.prefill.history.backlog == (NOW, 600_000)


def test_a_trailing_itl_with_a_lightly_loaded_pool_does_not_grow_it() -> None:
    profile = load_profile(DEFAULT_PROFILE)
    lengths = {"meanInputLength": 1000, "meanOutputLength": 400}
    prefill = PoolInput(ScaleState(2, 2, 0), signals(arrivalRate=10, **lengths,
                                                     queuedPrefillTokens=0),
                        PoolHistory(), profile)  # fmt: skip
    light = signals(outputTokenRate=4000, runningRequests=60, itlMs=60, **lengths)
    busy = signals(outputTokenRate=40_000, runningRequests=6000, itlMs=60, **lengths)

    after = decide(_capacity_spec(), prefill, PoolInput(ScaleState(10, 10, 0), light,
                                                        PoolHistory(), profile),
                   NOW, max_sample_age_s=60)  # fmt: skip
    during = decide(_capacity_spec(), prefill, PoolInput(ScaleState(10, 10, 0), busy,
                                                         PoolHistory(), profile),
                    NOW, max_sample_age_s=60)  # fmt: skip

    assert after.decode.desired_replicas == 10  # held (ITL over the SLO), not grown
    assert during.decode.desired_replicas > 10


@pytest.mark.parametrize(
    ("forecast_rate", "reason", "floor_wins"),
    [(400.0, Reason.FORECAST_FLOOR, True), (50.0, Reason.WITHIN_TOLERANCE, False)],
)
def test_the_forecast_is_a_floor_under_the_reactive_capacity(
    forecast_rate: float, reason: Reason, floor_wins: bool
) -> None:
    profile = load_profile(DEFAULT_PROFILE)
    now_load = signals(arrivalRate=100, meanInputLength=1000, queuedPrefillTokens=0)
    forecast = {SignalName.ARRIVAL_RATE: forecast_rate}
    prefill = PoolInput(ScaleState(4, 4, 0), now_load, PoolHistory(), profile, forecast)
    decode = PoolInput(ScaleState(4, 4, 0), signals(kvCacheUtilization=0.75), PoolHistory())

    pair = decide(_capacity_spec(), prefill, decode, NOW, max_sample_age_s=60)

    first = pair.prefill.steps[0]
    assert first.reason == reason
    assert ("reactive:" in first.message) is floor_wins  # both numbers when the floor wins
    assert pair.prefill.floor is not None  # the decision carries both numbers
    assert pair.prefill.forecast_won is floor_wins
    assert (pair.prefill.floor.predictive > pair.prefill.floor.reactive) is floor_wins


@pytest.mark.parametrize(
    ("patch", "bound", "reason"),
    [
        ({"prefill": {"maxReplicas": 6}}, 6, Reason.TOO_MANY_REPLICAS),
        ({"coordination": {"gpuBudget": 9}}, 9 - 4, Reason.GPU_BUDGET),
    ],
)
@pytest.mark.parametrize("forecast_rate", [1_000.0, 1e6, 1e12])
def test_the_forecast_floor_never_exceeds_max_replicas_or_the_budget(
    patch: dict[str, Any], bound: int, reason: Reason, forecast_rate: float
) -> None:
    profile = load_profile(DEFAULT_PROFILE)
    capacity = {"type": "Capacity", "profile": DEFAULT_PROFILE}
    spec = parse_policy(policy_doc({"spec": merge({
        "slo": {"ttftMs": 300, "itlMs": 25}, "coldStartSeconds": 60,
        "prefill": {**IMMEDIATE, "maxReplicas": 64, "metrics": [capacity]},
        "decode": {**IMMEDIATE, "maxReplicas": 64,
                   "metrics": [{"type": "KVCacheUtilization", "target": 0.75}]},
    }, patch)})).spec  # fmt: skip
    now_load = signals(arrivalRate=10, meanInputLength=1000, queuedPrefillTokens=0)
    forecast = {SignalName.ARRIVAL_RATE: forecast_rate, SignalName.MEAN_INPUT_LENGTH: 8000.0}
    prefill = PoolInput(ScaleState(2, 2, 0), now_load, PoolHistory(), profile, forecast)
    decode = PoolInput(ScaleState(4, 4, 0), signals(kvCacheUtilization=0.75), PoolHistory())

    pair = decide(spec, prefill, decode, NOW, max_sample_age_s=60)

    assert pair.prefill.steps[0].reason == Reason.FORECAST_FLOOR
    assert pair.prefill.steps[0].value > bound  # the forecast asked for more...
    assert pair.prefill.desired_replicas == bound  # ...than the bound lets it have
    assert reason in {s.reason for s in pair.prefill.steps}
    assert pair.decode.desired_replicas == 4


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and key in out else value
    return out


def _panic_spec(**panic: Any) -> Any:
    doc = policy_doc({"spec": {"prefill": {**IMMEDIATE, "maxReplicas": 32},
                               "decode": {**IMMEDIATE, "maxReplicas": 32}}})  # fmt: skip
    doc["spec"]["panic"] = panic  # set, not merged: a merge patch's null would delete
    return parse_policy(doc).spec


def _burst_then_quiet(spec: Any) -> list[PairDecision]:
    """Queued prefill tokens (16,384 per replica): a burst at twice the ready replicas,
    then no load at all, a tick every 15 s; replicas are ready a tick after they are
    asked for, and every decision is applied."""
    decode = PoolInput(ScaleState(4, 4, 0), signals(kvCacheUtilization=0.75), PoolHistory())
    history, current, ready, out = PoolHistory(), 2, 2, []
    for i, queued in enumerate([16384 * 4, 16384 * 4, 0, 0, 0, 0, 0, 0]):
        at = NOW + timedelta(seconds=15 * i)
        prefill = PoolInput(ScaleState(current, ready, current - ready),
                            PoolSignals({SignalName.QUEUED_PREFILL_TOKENS:
                                         Signal.fresh(queued, at)}), history)  # fmt: skip
        pair = decide(spec, prefill, decode, at, max_sample_age_s=60)
        out.append(pair)
        desired = pair.prefill.desired_replicas
        history = pair.prefill.history.with_scale(at, current, desired, timedelta(hours=1))
        ready, current = current, desired
    return out


def test_during_a_burst_the_pool_does_not_scale_down_until_the_panic_window_passes() -> None:
    ticks = _burst_then_quiet(_panic_spec(threshold=2.0, windowSeconds=60))

    sizes = [t.prefill.desired_replicas for t in ticks]
    # The burst asks for 4 with 2 ready (2x: panic) at 0 s and at 15 s (2 still on their
    # way); quiet from 30 s, but no scale-down before 15 + 60 = 75 s.
    assert sizes[:5] == [4, 4, 4, 4, 4]
    assert sizes[5] < 4
    assert Reason.PANIC in {s.reason for s in ticks[2].prefill.steps}
    assert ticks[1].prefill.history.panic_until == NOW + timedelta(seconds=75)
    assert ticks[5].prefill.history.panic_until is None


def test_without_panic_mode_the_pool_scales_down_as_soon_as_its_windows_allow() -> None:
    ticks = _burst_then_quiet(_panic_spec(threshold=None))

    sizes = [t.prefill.desired_replicas for t in ticks]
    assert sizes[:2] == [4, 4]
    assert sizes[2] < 4  # scale-down window 0: no hold
    assert all(Reason.PANIC not in {s.reason for s in t.prefill.steps} for t in ticks)

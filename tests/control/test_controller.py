"""Controller.tick scenarios: one synchronous tick at a time, fake clock, fake source and
recording actuator, the real database for the audit rows."""

from __future__ import annotations

import itertools
import math
from datetime import datetime, timedelta
from typing import Any

import pytest

from pdscaler.control.clock import FakeClock
from pdscaler.control.controller import Controller, ControllerConfig
from pdscaler.domain.decision import DecisionStatus
from pdscaler.domain.errors import Conflict, Unavailable
from pdscaler.domain.policy import ForecastModel, ForecastSpec, Role, parse_policy
from pdscaler.domain.reasons import Reason
from pdscaler.domain.versioning import ChangeKind
from pdscaler.forecast.baselines import LastValue
from pdscaler.profiles import DEFAULT_PROFILE, load_profile
from pdscaler.store.db import Database, create_db_engine
from pdscaler.store.decisions import DecisionFilter
from tests.control.harness import Harness
from tests.factories import policy_doc

P, D = Role.PREFILL, Role.DECODE
NO_DOWN_WINDOW = {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}


@pytest.fixture
def h(db: Database, clock: FakeClock) -> Harness:
    return Harness(db, clock)


def test_scale_up_is_audited_then_applied(h: Harness) -> None:
    h.add_policy(prefill=2)
    h.observe(P, queuedPrefillTokens=80_000)
    h.observe(D, kvCacheUtilization=0.75)

    report = h.tick()

    assert h.replicas(P) == 5  # ceil(80000 / 16384)
    decision = h.last(P).record
    assert decision.status is DecisionStatus.APPLIED
    assert (decision.current_replicas, decision.raw_recommendation, decision.desired_replicas) == (
        2, 5, 5)  # fmt: skip
    assert [s.name for s in decision.steps] == ["recommend", "gate", "stabilize", "limit"]
    assert h.last(D).record.status is DecisionStatus.SKIPPED  # within tolerance: no change
    assert (report.decisions, report.writes) == (2, 1)


def test_scale_up_rate_limited_by_default_behavior(h: Harness) -> None:
    h.add_policy({"spec": {"prefill": {"maxReplicas": 64}}}, prefill=2)
    h.observe(P, queuedPrefillTokens=1_000_000)
    h.observe(D, kvCacheUtilization=0.75)

    h.tick()

    assert h.replicas(P) == 6  # max(100% of 2, 4 pods) per 15 s
    assert h.reasons(P)[-1] == Reason.SCALE_UP_LIMIT


def test_true_zero_scales_down_but_missing_metrics_hold(h: Harness) -> None:
    h.add_policy({"spec": {"prefill": NO_DOWN_WINDOW}}, prefill=4)
    h.observe(P, queuedPrefillTokens=0)
    h.observe(D, kvCacheUtilization=0.75)
    h.tick()
    assert h.replicas(P) == 1  # a real zero is a real value

    h.actuator.set_replicas("inference", "llama-prefill", 4)
    h.controller = h.new_controller()  # forget the baseline: treat 4 as pdscaler's own
    h.observe(P, queuedPrefillTokens=None)
    h.tick()

    assert h.replicas(P) == 4
    assert h.last(P).record.status is DecisionStatus.SKIPPED
    assert Reason.METRICS_MISSING in h.reasons(P)


def test_metrics_disappearing_mid_scale_down_hold(h: Harness) -> None:
    down_slowly = {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 0,
                                              "policies": [{"type": "Pods", "value": 1,
                                                            "periodSeconds": 15}]}}}  # fmt: skip
    h.add_policy({"spec": {"prefill": down_slowly}}, prefill=6)
    h.observe(D, kvCacheUtilization=0.75)
    h.observe(P, queuedPrefillTokens=0)
    h.tick()
    h.tick()
    assert h.replicas(P) == 4

    h.metrics.failure = Unavailable("prometheus is down")
    for _ in range(3):
        h.tick()

    assert h.replicas(P) == 4
    assert Reason.METRICS_MISSING in h.reasons(P)
    assert h.last(P).record.signals["queuedPrefillTokens"]["quality"] == "error"


def test_partial_metrics_allow_only_scale_up(h: Harness) -> None:
    two_metrics = {"metrics": [{"type": "QueuedPrefillTokens", "targetPerReplica": 1000},
                               {"type": "QueuedRequests", "targetPerReplica": 4}]}  # fmt: skip
    h.add_policy({"spec": {"prefill": {**two_metrics, **NO_DOWN_WINDOW}}}, prefill=4)
    h.observe(D, kvCacheUtilization=0.75)

    h.observe(P, queuedPrefillTokens=0, queuedRequests=None)
    h.tick()
    held = h.replicas(P)
    h.observe(P, queuedPrefillTokens=7000, queuedRequests=None)
    h.tick()

    assert held == 4
    assert h.replicas(P) == 7
    assert Reason.METRICS_PARTIAL in h.reasons(P)


def test_fallback_after_consecutive_failures_only_upwards(h: Harness) -> None:
    fallback = {"fallback": {"failureThreshold": 3, "replicas": 6}}
    h.add_policy({"spec": {"prefill": fallback}}, prefill=2)
    h.observe(D, kvCacheUtilization=0.75)
    h.observe(P, queuedPrefillTokens=None)

    sizes = []
    for _ in range(3):
        h.tick()
        sizes.append(h.replicas(P))

    assert sizes == [2, 2, 6]
    assert Reason.FALLBACK in h.reasons(P)


def test_audit_write_failing_means_no_action(db: Database, clock: FakeClock) -> None:
    broken = Database(create_db_engine("postgresql+psycopg://nobody@127.0.0.1:1/none"))
    h = Harness(db, clock, audit_db=broken)
    h.add_policy(prefill=2)
    h.observe(P, queuedPrefillTokens=80_000)
    h.observe(D, kvCacheUtilization=0.75)

    report = h.tick()

    assert report.audited is False
    assert h.actuator.writes == []
    assert h.replicas(P) == 2


def test_conflict_is_recorded_and_retried_from_a_fresh_read(h: Harness) -> None:
    h.add_policy(prefill=2)
    h.observe(P, queuedPrefillTokens=80_000)
    h.observe(D, kvCacheUtilization=0.75)
    h.actuator.fail_next.append(Conflict("the object has been modified"))

    h.tick()
    conflicted = h.last(P).record
    h.tick()

    assert conflicted.status is DecisionStatus.CONFLICT
    assert "modified" in (conflicted.error or "")
    assert h.last(P).record.status is DecisionStatus.APPLIED
    assert h.replicas(P) == 5
    assert [w.replicas for w in h.actuator.writes] == [5]


def test_stale_write_against_a_changed_target_is_a_conflict(h: Harness) -> None:
    h.add_policy(prefill=2)
    h.observe(P, queuedPrefillTokens=80_000)
    h.observe(D, kvCacheUtilization=0.75)
    original = h.actuator.read_scale

    def read_then_someone_scales(namespace: str, target: object) -> object:
        state = original(namespace, target)  # type: ignore[arg-type]
        if getattr(target, "name", "") == "llama-prefill":
            h.actuator.set_replicas(namespace, "llama-prefill", 3)
        return state

    h.actuator.read_scale = read_then_someone_scales  # type: ignore[method-assign]
    h.tick()

    assert h.last(P).record.status is DecisionStatus.CONFLICT
    assert h.replicas(P) == 3  # the outside write stands; nothing was overwritten


def test_one_failing_policy_does_not_stop_the_others(h: Harness) -> None:
    h.add_policy(name="good", prefill=2)
    h.add_policy(name="broken", prefill=2)
    del h.actuator.targets[("inference", "broken-decode")]
    for name in ("good", "broken"):
        h.observe(P, name, queuedPrefillTokens=80_000)
        h.observe(D, name, kvCacheUtilization=0.75)

    report = h.tick()

    assert h.replicas(P, "good") == 5
    broken = h.last(P, "broken").record
    assert broken.status is DecisionStatus.FAILED
    assert broken.desired_replicas is None
    assert "NotFound" in (broken.error or "")
    assert report.failures == 2


@pytest.mark.parametrize(
    ("mode", "status", "reason"),
    [("shadow", DecisionStatus.SKIPPED, Reason.DESIRED_WITHIN_RANGE),
     ("paused", DecisionStatus.SKIPPED, Reason.PAUSED)],
)  # fmt: skip
def test_shadow_and_paused_never_write(
    h: Harness, mode: str, status: DecisionStatus, reason: Reason
) -> None:
    h.add_policy({"spec": {"mode": mode}}, prefill=2)
    h.observe(P, queuedPrefillTokens=80_000)
    h.observe(D, kvCacheUtilization=0.75)

    h.tick()

    record = h.last(P).record
    assert h.actuator.writes == []
    assert (record.status, record.steps[-1].reason) == (status, reason)
    assert record.desired_replicas == (5 if mode == "shadow" else 2)


def test_direction_pause_blocks_only_that_direction(h: Harness) -> None:
    h.add_policy({"spec": {"pause": {"scaleUp": True}, "decode": NO_DOWN_WINDOW}},
                 prefill=2, decode=8)  # fmt: skip
    h.observe(P, queuedPrefillTokens=80_000)
    h.observe(D, kvCacheUtilization=0.1)

    h.tick()

    assert h.replicas(P) == 2
    assert h.reasons(P)[-1] == Reason.SCALE_UP_PAUSED
    assert h.replicas(D) == 2  # ceil(8 x 0.1 / 0.75) = 2, scale-down not paused


def test_external_change_is_respected_for_its_period(h: Harness) -> None:
    respect = {"externalChanges": {"action": "respect", "respectSeconds": 60}}
    h.add_policy({"spec": respect}, prefill=2)
    h.observe(P, queuedPrefillTokens=20_000)  # wants 2
    h.observe(D, kvCacheUtilization=0.75)
    h.tick()

    h.actuator.set_replicas("inference", "llama-prefill", 6)  # someone scales by hand
    for _ in range(4):  # 60 s
        h.observe(P, queuedPrefillTokens=20_000)
        h.observe(D, kvCacheUtilization=0.75)
        h.tick()
        assert h.replicas(P) == 6
        assert h.reasons(P) == [Reason.EXTERNAL_CHANGE_RESPECTED]
    h.observe(P, queuedPrefillTokens=20_000)
    h.observe(D, kvCacheUtilization=0.75)
    h.tick()

    # The period is over: decided as usual again, and every recommendation of the last
    # 300 s said 2, so the stabilization window does not hold the scale-down back.
    assert h.reasons(P)[:2] == [Reason.EXTERNAL_CHANGE, Reason.TARGET_TRACKING]
    assert h.replicas(P) == 2


def test_external_change_reconciled_when_the_policy_says_so(h: Harness) -> None:
    reconcile = {"externalChanges": {"action": "reconcile"}, "prefill": NO_DOWN_WINDOW}
    h.add_policy({"spec": reconcile}, prefill=2)
    h.observe(P, queuedPrefillTokens=20_000)
    h.observe(D, kvCacheUtilization=0.75)
    h.tick()

    h.actuator.set_replicas("inference", "llama-prefill", 6)
    h.observe(P, queuedPrefillTokens=20_000)
    h.observe(D, kvCacheUtilization=0.75)
    h.tick()

    assert h.replicas(P) == 2
    assert h.reasons(P)[0] == Reason.EXTERNAL_CHANGE
    assert "pdscaler last set 2" in h.last(P).record.steps[0].message


def test_shadow_mode_watches_outside_changes_without_holding(h: Harness) -> None:
    h.add_policy({"spec": {"mode": "shadow"}}, prefill=2)
    h.observe(P, queuedPrefillTokens=20_000)
    h.observe(D, kvCacheUtilization=0.75)
    h.tick()

    h.actuator.set_replicas("inference", "llama-prefill", 6)  # another autoscaler acts
    h.observe(P, queuedPrefillTokens=20_000)
    h.observe(D, kvCacheUtilization=0.75)
    h.tick()

    assert h.reasons(P)[0] == Reason.TARGET_TRACKING
    # What pdscaler would run: the load needs 2, and every recommendation in the window said 2.
    assert h.last(P).record.desired_replicas == 2
    assert h.actuator.writes == []


def test_restart_mid_window_decides_as_without_restart(db: Database, clock: FakeClock) -> None:
    def run(restart: bool) -> list[int]:
        h = Harness(db, clock)
        name = f"run-{int(restart)}"
        h.add_policy(name=name, prefill=2)
        h.observe(D, name, kvCacheUtilization=0.75)
        sizes = []
        for i, queued in enumerate([200_000, 200_000, 0, 0, 0, 0, 0, 0]):
            if restart and i == 4:
                h.controller = h.new_controller()
                h.controller.restore()
            h.observe(P, name, queuedPrefillTokens=queued)
            h.observe(D, name, kvCacheUtilization=0.75)
            h.tick(timedelta(seconds=60))
            sizes.append(h.replicas(P, name))
        return sizes

    start = clock.now()
    uninterrupted = run(restart=False)
    clock.advance(start - clock.now() + timedelta(hours=2))
    restarted = run(restart=True)

    assert restarted == uninterrupted
    assert uninterrupted[1] == 8  # grew
    assert uninterrupted[-1] < 8  # and came down once the 300 s window had passed
    assert uninterrupted[4] == 8  # still inside the scale-down window at the restart


def test_burst_then_quiet_reverses_at_most_once_per_window(h: Harness) -> None:
    h.add_policy({"spec": {"prefill": {"maxReplicas": 16}}}, prefill=2)
    h.observe(D, kvCacheUtilization=0.75)
    load = [10_000] * 4 + [150_000] * 8 + [10_000] * 40 + [60_000, 10_000] * 20
    sizes = []
    for queued in load:
        h.observe(P, queuedPrefillTokens=queued)
        h.observe(D, kvCacheUtilization=0.75)
        h.tick()
        sizes.append(h.replicas(P))

    changes = [b - a for a, b in itertools.pairwise(sizes) if b != a]
    reversals = sum(1 for a, b in itertools.pairwise(changes) if (a > 0) != (b > 0))
    window_ticks = 300 // 15
    assert max(sizes) >= 9
    assert reversals <= len(load) // window_ticks


def test_every_tick_writes_one_row_per_pool(h: Harness) -> None:
    h.add_policy(prefill=2)
    h.observe(P, queuedPrefillTokens=16_000)
    h.observe(D, kvCacheUtilization=0.75)

    for _ in range(3):
        h.tick()

    page, _ = h.decisions.page(DecisionFilter(policy="llama"), limit=100)
    assert len(page) == 6
    assert {d.record.role for d in page} == {P, D}
    assert all(d.record.leader_identity == "test-0" for d in page)


def test_an_actuator_bug_fails_only_its_policy(h: Harness) -> None:
    h.add_policy(name="good", prefill=2)
    h.add_policy(name="buggy", prefill=2)
    for name in ("good", "buggy"):
        h.observe(P, name, queuedPrefillTokens=80_000)
        h.observe(D, name, kvCacheUtilization=0.75)
    real_read = h.actuator.read_scale

    def read(namespace: str, target: object) -> object:
        if getattr(target, "name", "").startswith("buggy"):
            raise KeyError("a bug in an adapter")
        return real_read(namespace, target)  # type: ignore[arg-type]

    h.actuator.read_scale = read  # type: ignore[method-assign,assignment]
    h.tick()

    assert h.replicas(P, "good") == 5
    assert "KeyError" in (h.last(P, "buggy").record.error or "")


def test_a_policy_that_cannot_be_decided_fails_alone(h: Harness) -> None:
    h.add_policy(name="good", prefill=2)
    h.add_policy(name="bad", prefill=2)
    for name in ("good", "bad"):
        h.observe(P, name, queuedPrefillTokens=80_000)
        h.observe(D, name, kvCacheUtilization=0.75)

    def profile_for(ref: str | None) -> None:
        raise ValueError("no such profile")

    h.controller._config.profile_for = profile_for  # type: ignore[assignment]
    bad = policy_doc({"spec": {"prefill": {
        "metrics": [{"type": "Capacity", "profile": "nope"}],
        "scaleTargetRef": {"name": "bad-prefill"}}, "decode": {
        "scaleTargetRef": {"name": "bad-decode"}}}}, name="bad")  # fmt: skip
    h.policies.change("inference", "bad", ChangeKind.UPDATE, lambda _: parse_policy(bad),
                      expected_version=None, author="t", comment="", now=h.clock.now())  # fmt: skip
    h.tick()

    assert h.replicas(P, "good") == 5
    assert "no such profile" in (h.last(P, "bad").record.error or "")


def test_a_loop_limited_to_some_namespaces_runs_only_their_policies(
    db: Database, clock: FakeClock
) -> None:
    h = Harness(db, clock)
    h.add_policy(name="llama")
    other = policy_doc(name="other")
    other["metadata"]["namespace"] = "elsewhere"
    h.policies.create(parse_policy(other), author="t", comment="", now=clock.now())
    h.controller = Controller(
        policies=h.policies, decisions=h.decisions, metrics=h.metrics, actuator=h.actuator,
        forecaster=LastValue(), clock=clock,
        config=ControllerConfig(interval=timedelta(seconds=15), max_sample_age_s=60,
                                namespaces=frozenset({"inference"})),
    )  # fmt: skip

    report = h.tick()

    assert report.policies == 1
    page, _ = h.decisions.page(DecisionFilter(), limit=10)
    assert {d.record.policy_namespace for d in page} == {"inference"}


def test_a_new_policy_does_not_shrink_its_pools_at_its_first_look(h: Harness) -> None:
    h.add_policy(prefill=6)
    h.observe(P, queuedPrefillTokens=16_000)  # a quiet moment: 1 replica's worth
    h.observe(D, kvCacheUtilization=0.75)

    h.tick()

    assert h.replicas(P) == 6  # the scale-down window starts out holding the size it runs
    assert h.reasons(P)[-2] == Reason.SCALE_DOWN_STABILIZED


def test_each_policy_forecasts_with_the_model_it_names(db: Database, clock: FakeClock) -> None:
    h = Harness(db, clock)
    h.add_policy({"spec": {"forecast": {"model": "none"}}}, name="reactive")
    h.add_policy({"spec": {"forecast": {"model": "lastValue"}}}, name="predictive")
    asked: list[ForecastSpec] = []

    def choose(spec: ForecastSpec) -> LastValue | None:
        asked.append(spec)
        return None if spec.model is ForecastModel.NONE else LastValue()

    h.controller = Controller(
        policies=h.policies, decisions=h.decisions, metrics=h.metrics, actuator=h.actuator,
        forecaster=LastValue(), clock=clock,
        config=ControllerConfig(interval=timedelta(seconds=15), max_sample_age_s=60,
                                forecaster_for=choose),
    )  # fmt: skip
    for name in ("reactive", "predictive"):
        h.observe(P, name=name, queuedPrefillTokens=16_000, arrivalRate=10)
        h.observe(D, name=name, kvCacheUtilization=0.5)

    h.tick()
    h.tick()

    assert h.last(P, "reactive").record.forecast is None
    assert (h.last(P, "predictive").record.forecast or {}).get("arrivalRate") == 10
    assert sorted(s.model.value for s in asked) == ["lastValue", "none"]  # one each, kept


class CountingForecaster(LastValue):
    def __init__(self) -> None:
        super().__init__()
        self.refits = 0

    def refit(self, now: datetime, *, budget_s: float = math.inf) -> int:
        self.refits += 1
        return 0


def test_forecasts_are_fitted_beside_the_tick_and_their_model_audited(
    db: Database, clock: FakeClock
) -> None:
    h = Harness(db, clock)
    h.add_policy({"spec": {"forecast": {"model": "lastValue"}}})
    forecaster = CountingForecaster()
    h.controller = Controller(
        policies=h.policies, decisions=h.decisions, metrics=h.metrics, actuator=h.actuator,
        forecaster=LastValue(), clock=clock,
        config=ControllerConfig(interval=timedelta(seconds=15), max_sample_age_s=60,
                                forecaster_for=lambda _spec: forecaster),
    )  # fmt: skip
    h.observe(P, queuedPrefillTokens=16_000, arrivalRate=10)
    h.observe(D, kvCacheUtilization=0.5)

    h.tick()
    h.tick()
    h.controller.refit_forecasts(budget_s=1.0)

    assert forecaster.refits == 1  # the ticks themselves never fit
    audit = h.last(P).record.forecast or {}
    assert (audit["model"], audit["horizonS"], audit["arrivalRate"]) == ("lastValue", 105.0, 10)


class FixedForecaster(LastValue):
    """Forecasts ``factor`` times the last value of every series."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def predict(self, key: Any, at: datetime, horizon_s: float) -> float | None:
        last = super().predict(key, at, horizon_s)
        return None if last is None else last * self.factor


@pytest.mark.parametrize(("factor", "won"), [(4.0, "forecast"), (1.0, "reactive")])
def test_the_decision_row_carries_both_numbers_and_which_one_won(
    db: Database, clock: FakeClock, factor: float, won: str
) -> None:
    h = Harness(db, clock)
    capacity = {"type": "Capacity", "profile": DEFAULT_PROFILE}
    h.add_policy({"spec": {"slo": {"ttftMs": 300, "itlMs": 25},
                           "prefill": {"maxReplicas": 64, "metrics": [capacity]}}})  # fmt: skip
    profile = load_profile(DEFAULT_PROFILE)
    h.controller = Controller(
        policies=h.policies, decisions=h.decisions, metrics=h.metrics, actuator=h.actuator,
        forecaster=FixedForecaster(factor), clock=clock,
        config=ControllerConfig(interval=timedelta(seconds=15), max_sample_age_s=60,
                                profile_for=lambda _ref: profile),
    )  # fmt: skip
    h.observe(P, arrivalRate=40, meanInputLength=2000, queuedPrefillTokens=0)
    h.observe(D, kvCacheUtilization=0.5)

    h.tick()

    audit = h.last(P).record.forecast or {}  # read back from the decision log
    assert audit["won"] == won
    assert audit["arrivalRate"] == 40 * factor
    assert (audit["floorReplicas"] > audit["reactiveReplicas"]) is (won == "forecast")
    recommend = h.last(P).record.steps[0]
    assert (recommend.reason == "ForecastFloor") is (won == "forecast")

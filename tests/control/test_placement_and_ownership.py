"""What the cluster says about a target beyond its size changes what the loop does: another
autoscaler drives it, its pods cannot be placed, or a scale-down should spare busy pods."""

from __future__ import annotations

import pytest

from pdscaler.control.clock import FakeClock
from pdscaler.domain.decision import DecisionStatus
from pdscaler.domain.policy import Role
from pdscaler.domain.reasons import Reason
from pdscaler.domain.signals import PoolKey
from pdscaler.store.db import Database
from tests.control.harness import NS, Harness

P, D = Role.PREFILL, Role.DECODE
NO_DOWN_WINDOW = {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}


@pytest.fixture
def h(db: Database, clock: FakeClock) -> Harness:
    return Harness(db, clock)


def test_a_target_another_autoscaler_drives_is_left_alone_and_the_row_says_why(
    h: Harness,
) -> None:
    h.add_policy(prefill=2)
    h.actuator.observe(NS, "llama-prefill", managed_by="HPA inference/llama-prefill")
    h.observe(P, queuedPrefillTokens=80_000)
    h.observe(D, kvCacheUtilization=0.75)

    h.tick()

    assert h.replicas(P) == 2
    record = h.last(P).record
    assert record.status is DecisionStatus.SKIPPED
    assert record.steps[-1].reason == Reason.MANAGED_ELSEWHERE
    assert "HPA inference/llama-prefill" in record.steps[-1].message
    assert h.actuator.writes == []


def test_shadow_mode_still_decides_beside_another_autoscaler(h: Harness) -> None:
    h.add_policy({"spec": {"mode": "shadow"}}, prefill=2)
    h.actuator.observe(NS, "llama-prefill", managed_by="HPA inference/llama-prefill")
    h.observe(P, queuedPrefillTokens=80_000)
    h.observe(D, kvCacheUtilization=0.75)

    h.tick()

    assert h.last(P).record.desired_replicas == 5  # what pdscaler would do, for comparison
    assert h.actuator.writes == []


def test_unplaceable_pods_hold_a_scale_up(h: Harness) -> None:
    h.add_policy(prefill=4)
    h.actuator.observe(NS, "llama-prefill", unschedulable=2)
    h.observe(P, queuedPrefillTokens=160_000)
    h.observe(D, kvCacheUtilization=0.75)

    h.tick()

    assert h.replicas(P) == 4
    step = h.last(P).record.steps[-1]
    assert (step.reason, step.value) == (Reason.UNSCHEDULABLE, 4)
    assert "2 pods cannot be scheduled" in step.message


def test_unplaceable_pods_do_not_hold_a_scale_down(h: Harness) -> None:
    h.add_policy({"spec": {"prefill": NO_DOWN_WINDOW}}, prefill=6)
    h.actuator.observe(NS, "llama-prefill", unschedulable=2)
    h.observe(P, queuedPrefillTokens=16_000)
    h.observe(D, kvCacheUtilization=0.75)

    h.tick()

    assert h.replicas(P) < 6
    assert Reason.UNSCHEDULABLE not in h.reasons(P)


def test_the_ratio_band_does_not_grow_a_pool_whose_pods_cannot_be_placed(h: Harness) -> None:
    ratio = {"coordination": {"prefillToDecodeRatio": {"min": 0.5, "max": 2}}}
    h.add_policy({"spec": ratio}, prefill=2, decode=2)
    h.actuator.observe(NS, "llama-prefill", unschedulable=1)
    h.observe(P, queuedPrefillTokens=30_000)
    h.observe(D, kvCacheUtilization=2.0)  # decode wants to double

    h.tick()

    assert h.replicas(P) == 2


def test_a_scale_down_first_marks_the_least_loaded_pods(h: Harness) -> None:
    h.add_policy({"spec": {"prefill": NO_DOWN_WINDOW}}, prefill=6)
    h.actuator.observe(NS, "llama-prefill", selector="app=llama-prefill")
    h.metrics.loads[PoolKey(NS, "llama", P)] = {"p-0": 9.0, "p-1": 0.0}
    h.observe(P, queuedPrefillTokens=16_000)
    h.observe(D, kvCacheUtilization=0.75)

    h.tick()

    assert h.replicas(P) < 6
    assert h.actuator.removals == [(NS, "llama-prefill", {"p-0": 9.0, "p-1": 0.0})]


def test_marking_pods_that_fails_does_not_hold_the_scale_down(h: Harness) -> None:
    h.add_policy({"spec": {"prefill": NO_DOWN_WINDOW}}, prefill=6)
    h.actuator.observe(NS, "llama-prefill", selector="app=llama-prefill")

    def broken(*_args: object) -> int:
        raise RuntimeError("pods cannot be patched")

    h.actuator.prefer_removal = broken  # type: ignore[method-assign]
    h.observe(P, queuedPrefillTokens=16_000)
    h.observe(D, kvCacheUtilization=0.75)

    h.tick()

    assert h.replicas(P) < 6
    assert h.last(P).record.status is DecisionStatus.APPLIED


def test_a_scale_up_marks_no_pods(h: Harness) -> None:
    h.add_policy(prefill=2)
    h.actuator.observe(NS, "llama-prefill", selector="app=llama-prefill")
    h.observe(P, queuedPrefillTokens=80_000)
    h.observe(D, kvCacheUtilization=0.75)

    h.tick()

    assert h.actuator.removals == []

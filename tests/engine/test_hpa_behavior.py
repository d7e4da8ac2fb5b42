"""HPA v2 behavior, step by step, against the examples of the Kubernetes documentation
("Horizontal Pod Autoscaling": Scaling policies, Stabilization window, Default Behavior,
and the examples that follow it) and the rules of the HPA controller's code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from pdscaler.domain.policy import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    HPAScalingPolicy,
    HPAScalingRules,
    ScalingPolicyType,
    SelectPolicy,
)
from pdscaler.domain.reasons import Reason
from pdscaler.engine.history import Recommendation, ScaleEvent
from pdscaler.engine.limits import limit_replicas, rate_bounds
from pdscaler.engine.stabilize import stabilize_recommendation

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PODS, PERCENT = ScalingPolicyType.PODS, ScalingPolicyType.PERCENT


def rules(*policies: tuple[ScalingPolicyType, int, int], select: SelectPolicy = SelectPolicy.MAX,
          window: int = 0) -> HPAScalingRules:  # fmt: skip
    return HPAScalingRules(
        stabilization_window_seconds=window,
        select_policy=select,
        policies=[HPAScalingPolicy(type=t, value=v, period_seconds=p) for t, v, p in policies],
    )


def ago(seconds: int) -> datetime:
    return NOW - timedelta(seconds=seconds)


@dataclass(frozen=True)
class Limit:
    name: str
    current: int
    desired: int
    expected: int
    reason: Reason
    up: HPAScalingRules = DEFAULT_SCALE_UP
    down: HPAScalingRules = DEFAULT_SCALE_DOWN
    events: tuple[ScaleEvent, ...] = ()
    min_replicas: int = 1
    max_replicas: int = 100


DOCS_DOWN = rules((PODS, 4, 60), (PERCENT, 10, 60))

LIMITS = [
    # Default behavior: scale up by max(100%, 4 pods) per 15 s.
    Limit("default up doubles a large pool", 10, 50, 20, Reason.SCALE_UP_LIMIT),
    Limit("default up adds 4 to a small pool", 2, 50, 6, Reason.SCALE_UP_LIMIT),
    Limit("default up within the limit", 10, 15, 15, Reason.DESIRED_WITHIN_RANGE),
    Limit("default down may remove everything to min", 10, 1, 1, Reason.DESIRED_WITHIN_RANGE),
    Limit("default down stops at minReplicas", 10, 0, 2, Reason.TOO_FEW_REPLICAS, min_replicas=2),
    Limit("max replicas caps a scale-up", 10, 50, 12, Reason.TOO_MANY_REPLICAS, max_replicas=12),
    # Docs, Scaling policies: 80 replicas toward 10 with Pods 4/60s and Percent 10/60s.
    # The policy allowing the most change wins: 10% of 80 = 8 pods.
    Limit("docs: first step 80 -> 72", 80, 10, 72, Reason.SCALE_DOWN_LIMIT, down=DOCS_DOWN),
    # "when the number of replicas is 72, 10% of the pods is 7.2 but the number is rounded
    # up to 8" -- and the 8 removed already in this period count against it.
    Limit("docs: same period, nothing more", 72, 10, 72, Reason.SCALE_DOWN_LIMIT,
          down=DOCS_DOWN, events=(ScaleEvent(ago(30), -8),)),
    Limit("docs: next period 72 -> 64", 72, 10, 64, Reason.SCALE_DOWN_LIMIT, down=DOCS_DOWN,
          events=(ScaleEvent(ago(61), -8),)),
    # Below 40 replicas, the 4-pod policy allows more change than 10%.
    Limit("docs: under 40 pods policy wins", 30, 10, 26, Reason.SCALE_DOWN_LIMIT,
          down=DOCS_DOWN),
    Limit("selectPolicy Min takes the least change", 80, 10, 76, Reason.SCALE_DOWN_LIMIT,
          down=rules((PODS, 4, 60), (PERCENT, 10, 60), select=SelectPolicy.MIN)),
    # Docs example: disable scale down.
    Limit("scale down disabled", 10, 2, 10, Reason.SCALING_DISABLED,
          down=rules((PERCENT, 100, 15), select=SelectPolicy.DISABLED)),
    Limit("scale up disabled", 2, 10, 2, Reason.SCALING_DISABLED,
          up=rules((PERCENT, 100, 15), select=SelectPolicy.DISABLED)),
    # Docs example: limit scale-down to 10% a minute.
    Limit("docs: 10% per minute", 50, 1, 45, Reason.SCALE_DOWN_LIMIT,
          down=rules((PERCENT, 10, 60))),
    # Percent scale-up rounds up, or a pool of 1 could never grow by 10%.
    Limit("percent up rounds up", 1, 5, 2, Reason.SCALE_UP_LIMIT, up=rules((PERCENT, 10, 60))),
    # Changes made within the period are counted from the period's starting size.
    Limit("scale-up already spent in the period", 8, 20, 8, Reason.SCALE_UP_LIMIT,
          up=rules((PODS, 4, 60)), events=(ScaleEvent(ago(10), 4),)),
    Limit("scale-up spent in an old period", 8, 20, 12, Reason.SCALE_UP_LIMIT,
          up=rules((PODS, 4, 60)), events=(ScaleEvent(ago(61), 4),)),
    Limit("a scale-down in the period adds room for growth", 6, 20, 12, Reason.SCALE_UP_LIMIT,
          up=rules((PODS, 4, 60)), events=(ScaleEvent(ago(10), -2),)),
    Limit("current above max comes down to max", 20, 20, 12, Reason.TOO_MANY_REPLICAS,
          max_replicas=12),
    Limit("current below min comes up to min", 0, 0, 2, Reason.TOO_FEW_REPLICAS, min_replicas=2),
]  # fmt: skip


@pytest.mark.parametrize("case", LIMITS, ids=lambda c: c.name)
def test_rate_policies_and_bounds(case: Limit) -> None:
    rate = rate_bounds(case.current, case.events, case.up, case.down, NOW)
    step = limit_replicas(case.desired, case.current, case.min_replicas, case.max_replicas, rate)

    assert (step.value, step.reason) == (case.expected, case.reason)


@dataclass(frozen=True)
class Stabilize:
    name: str
    current: int
    recommendation: int
    past: tuple[tuple[int, int], ...]  # (seconds ago, replicas)
    expected: int
    reason: Reason
    up_window_s: int = 0
    down_window_s: int = 300
    history: tuple[Recommendation, ...] = field(init=False, default=())


STABILIZE = [
    # Docs, Stabilization window: scale down to the highest recommendation of the window.
    Stabilize("down held by a recent higher recommendation", 10, 4, ((60, 8), (120, 6)), 8,
              Reason.SCALE_DOWN_STABILIZED),
    Stabilize("down once the window has passed", 10, 4, ((301, 9), (400, 10)), 4,
              Reason.NOT_STABILIZED),
    Stabilize("down no lower than current when window says so", 10, 4, ((30, 12),), 10,
              Reason.SCALE_DOWN_STABILIZED),
    Stabilize("up is immediate with the default 0 s window", 4, 9, ((30, 4), (60, 5)), 9,
              Reason.NOT_STABILIZED),
    Stabilize("up window takes the lowest recommendation", 4, 9, ((30, 6), (60, 7)), 6,
              Reason.SCALE_UP_STABILIZED, up_window_s=120),
    Stabilize("up window never goes below current", 4, 9, ((30, 3),), 4,
              Reason.SCALE_UP_STABILIZED, up_window_s=120),
    Stabilize("no change", 5, 5, ((30, 9),), 5, Reason.NOT_STABILIZED),
]  # fmt: skip


@pytest.mark.parametrize("case", STABILIZE, ids=lambda c: c.name)
def test_stabilization_windows(case: Stabilize) -> None:
    history = sorted(Recommendation(ago(s), r) for s, r in case.past)  # oldest first

    step = stabilize_recommendation(case.recommendation, case.current, history, NOW,
                                    timedelta(seconds=case.up_window_s),
                                    timedelta(seconds=case.down_window_s))  # fmt: skip

    assert (step.value, step.reason) == (case.expected, case.reason)


def test_docs_walk_from_80_to_10_takes_one_period_per_step() -> None:
    """Replaying the documentation's scale-down minute by minute."""
    current, events, sizes = 80, [], []
    for minute in range(14):
        at = NOW + timedelta(seconds=61 * minute)
        rate = rate_bounds(current, events, DEFAULT_SCALE_UP, DOCS_DOWN, at)
        step = limit_replicas(10, current, 1, 100, rate)
        events.append(ScaleEvent(at, step.value - current))
        current = step.value
        sizes.append(current)

    # 10% while that is more than 4 pods (above 40), then 4 pods a minute, down to 10.
    assert sizes == [72, 64, 57, 51, 45, 40, 36, 32, 28, 24, 20, 16, 12, 10]

"""HPA's replica math and default behavior, kept apart from the loops that use it.

Pure: values in, values out; the windows and rate limits are pdscaler's own engine
functions (:mod:`pdscaler.engine.stabilize`, :mod:`pdscaler.engine.limits`), which
implement exactly HPA's semantics. Source: Kubernetes ``pkg/controller/podautoscaler``
(``replica_calculator.go``, ``horizontal.go``) and the HPA documentation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pdscaler.domain.policy import DEFAULT_SCALE_DOWN, DEFAULT_SCALE_UP
from pdscaler.engine.history import Recommendation, ScaleEvent
from pdscaler.engine.limits import limit_replicas, rate_bounds
from pdscaler.engine.stabilize import stabilize_recommendation

# HPA's --horizontal-pod-autoscaler-sync-period default.
HPA_SYNC_S = 15.0
# Rate-policy periods are far shorter; older scale events no longer count.
EVENT_MEMORY = timedelta(minutes=30)


def hpa_metric_replicas(
    usage_ratio: float, ready: int, missing: int, current: int, tolerance: float
) -> int:
    """The replicas HPA asks for from a per-pod average metric (Kubernetes
    ``replica_calculator.go``, ``calcPlainMetricReplicas``).

    ``usage_ratio`` is the mean over the ``ready`` pods that report, divided by the
    target. Pods asked for but not serving yet (``missing``) count as at the target on a
    scale-down and as idle on a scale-up, so that starting pods neither cause a scale-down
    nor double a scale-up. Within the tolerance, or if counting the missing pods turns the
    direction round, the answer is ``current``.
    """
    within = 1.0 - tolerance <= usage_ratio <= 1.0 + tolerance
    if missing == 0:
        return current if within else math.ceil(usage_ratio * ready)
    filler = 1.0 if usage_ratio < 1.0 else 0.0
    pods = ready + missing
    new_ratio = (usage_ratio * ready + filler * missing) / pods
    if (
        1.0 - tolerance <= new_ratio <= 1.0 + tolerance
        or (usage_ratio < 1.0 < new_ratio)
        or (usage_ratio > 1.0 > new_ratio)
    ):
        return current
    desired = math.ceil(new_ratio * pods)
    if (new_ratio < 1.0 and desired > current) or (new_ratio > 1.0 and desired < current):
        return current
    return desired


def external_average_replicas(
    metric: float, threshold: float, current: int, tolerance: float
) -> int:
    """HPA's External metric with an AverageValue target, the HPA that KEDA creates
    (``GetExternalPerPodMetricReplicas``): ceil(metric / threshold), unless metric ÷
    (threshold × current) is within the tolerance of 1."""
    ratio = metric / (threshold * current)
    if 1.0 - tolerance <= ratio <= 1.0 + tolerance:
        return current
    return math.ceil(metric / threshold)


@dataclass
class HpaBehavior:
    """HPA v2's default ``behavior`` for one pool: the recommendation is stabilized
    (scale-up window 0 s, scale-down window 300 s), then limited by the rate policies
    (up: the larger of +100% and +4 pods per 15 s; down: -100% per 15 s) and min/max.
    The windows and rate limits are pdscaler's own engine functions, which implement
    exactly HPA's semantics. As HPA does for a new autoscaler
    (``maybeInitScaleDownStabilizationWindow``), the first call counts the current size
    as a recommendation, so a pool does not shrink in its first scale-down window."""

    min_replicas: int
    max_replicas: int
    recommendations: list[Recommendation] | None = None
    events: list[ScaleEvent] = field(default_factory=list)

    def normalize(self, recommendation: int, current: int, now: datetime) -> int:
        if self.recommendations is None:
            self.recommendations = [Recommendation(now, current)]
        up_window = timedelta(seconds=DEFAULT_SCALE_UP.stabilization_window_seconds or 0)
        down_window = timedelta(seconds=DEFAULT_SCALE_DOWN.stabilization_window_seconds or 0)
        stabilized = stabilize_recommendation(
            recommendation, current, self.recommendations, now, up_window, down_window
        ).value
        keep = now - max(up_window, down_window)
        self.recommendations = [r for r in self.recommendations if r.at > keep]
        self.recommendations.append(Recommendation(now, recommendation))
        self.events = [e for e in self.events if e.at > now - EVENT_MEMORY]
        bounds = rate_bounds(current, self.events, DEFAULT_SCALE_UP, DEFAULT_SCALE_DOWN, now)
        return limit_replicas(
            stabilized, current, self.min_replicas, self.max_replicas, bounds
        ).value

    def scaled(self, now: datetime, change: int) -> None:
        if change:
            self.events.append(ScaleEvent(now, change))

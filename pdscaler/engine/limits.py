"""Rate policies and min/max, with exactly the Kubernetes HPA v2 semantics.

A Pods policy allows ``value`` replicas of change per ``periodSeconds``; a Percent policy
allows ``value`` percent of the replicas the pool had at the start of the period. Changes
already made within the period count against it. ``selectPolicy: Max`` takes the policy
that allows the most change, ``Min`` the least, ``Disabled`` none. (HPA:
``calculateScaleUpLimitWithScalingRules``, ``calculateScaleDownLimitWithBehaviors``,
``convertDesiredReplicasWithBehaviorRate``.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from pdscaler.domain.decision import Step
from pdscaler.domain.policy import HPAScalingRules, ScalingPolicyType, SelectPolicy
from pdscaler.domain.reasons import Reason
from pdscaler.engine.history import ScaleEvent


class RateBounds(NamedTuple):
    """The most and the least replicas the rate policies allow now (None: disabled)."""

    highest: int | None
    lowest: int | None


def rate_bounds(
    current_replicas: int,
    events: Sequence[ScaleEvent],
    up: HPAScalingRules,
    down: HPAScalingRules,
    now: datetime,
) -> RateBounds:
    """Both directions at once: the changes of each period are counted once."""
    periods: dict[int, tuple[int, int]] = {}
    highest = lowest = None
    if up.select_policy is not SelectPolicy.DISABLED:
        highest = max(scale_up_limit(current_replicas, events, up, now, periods), current_replicas)
    if down.select_policy is not SelectPolicy.DISABLED:
        lowest = min(
            scale_down_limit(current_replicas, events, down, now, periods), current_replicas
        )
    return RateBounds(highest, lowest)


def changes_in_period(
    events: Sequence[ScaleEvent], now: datetime, period_s: int
) -> tuple[int, int]:
    """Replicas added and replicas removed within the last ``period_s`` seconds."""
    added = removed = 0
    if events:
        cutoff = now - timedelta(seconds=period_s)
        for at, change in events:
            if at > cutoff:
                if change > 0:
                    added += change
                else:
                    removed -= change
    return added, removed


def scale_up_limit(
    current_replicas: int,
    events: Sequence[ScaleEvent],
    rules: HPAScalingRules,
    now: datetime,
    periods: dict[int, tuple[int, int]] | None = None,
) -> int:
    if rules.select_policy is SelectPolicy.DISABLED:
        return current_replicas
    pick = min if rules.select_policy is SelectPolicy.MIN else max
    proposals = []
    for policy in rules.policies or ():
        added, removed = _changes(events, now, policy.period_seconds, periods)
        start = current_replicas - added + removed
        if policy.type is ScalingPolicyType.PODS:
            proposals.append(start + policy.value)
        else:  # rounded up, or a small pool could never grow
            proposals.append(math.ceil(start * (1 + policy.value / 100)))
    return pick(proposals) if proposals else current_replicas


def scale_down_limit(
    current_replicas: int,
    events: Sequence[ScaleEvent],
    rules: HPAScalingRules,
    now: datetime,
    periods: dict[int, tuple[int, int]] | None = None,
) -> int:
    if rules.select_policy is SelectPolicy.DISABLED:
        return current_replicas
    pick = max if rules.select_policy is SelectPolicy.MIN else min
    proposals = []
    for policy in rules.policies or ():
        added, removed = _changes(events, now, policy.period_seconds, periods)
        start = current_replicas - added + removed
        if policy.type is ScalingPolicyType.PODS:
            proposals.append(start - policy.value)
        else:  # truncated, as HPA's int32() conversion does
            proposals.append(int(start * (1 - policy.value / 100)))
    return pick(proposals) if proposals else current_replicas


def _changes(
    events: Sequence[ScaleEvent],
    now: datetime,
    period_s: int,
    periods: dict[int, tuple[int, int]] | None,
) -> tuple[int, int]:
    if periods is None:
        return changes_in_period(events, now, period_s)
    counted = periods.get(period_s)
    if counted is None:
        counted = periods[period_s] = changes_in_period(events, now, period_s)
    return counted


def limit_replicas(
    desired_replicas: int,
    current_replicas: int,
    min_replicas: int,
    max_replicas: int,
    rate: RateBounds,
) -> Step:
    """Clamp ``desired_replicas`` by the rate policies (``rate``, from :func:`rate_bounds`),
    then by minReplicas/maxReplicas."""
    if desired_replicas > current_replicas:
        limit = rate.highest
        if limit is None:
            return Step("limit", current_replicas, Reason.SCALING_DISABLED, "scale-up disabled")
        if max_replicas > limit:
            allowed, reason = limit, Reason.SCALE_UP_LIMIT
            message = f"the scale-up policies allow at most {limit} now"
        else:
            allowed, reason = max_replicas, Reason.TOO_MANY_REPLICAS
            message = f"capped at maxReplicas {max_replicas}"
        if desired_replicas > allowed:
            return Step("limit", allowed, reason, message)
    elif desired_replicas < current_replicas:
        limit = rate.lowest
        if limit is None:
            return Step("limit", current_replicas, Reason.SCALING_DISABLED, "scale-down disabled")
        if min_replicas < limit:
            allowed, reason = limit, Reason.SCALE_DOWN_LIMIT
            message = f"the scale-down policies allow at least {limit} now"
        else:
            allowed, reason = min_replicas, Reason.TOO_FEW_REPLICAS
            message = f"held at minReplicas {min_replicas}"
        if desired_replicas < allowed:
            return Step("limit", allowed, reason, message)
    bounded = min(max(desired_replicas, min_replicas), max_replicas)
    if bounded != desired_replicas:
        reason = Reason.TOO_FEW_REPLICAS if bounded > desired_replicas else Reason.TOO_MANY_REPLICAS
        return Step("limit", bounded, reason, f"bounded to [{min_replicas}, {max_replicas}]")
    return Step("limit", desired_replicas, Reason.DESIRED_WITHIN_RANGE, "")

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

from pdscaler.domain.decision import Step
from pdscaler.domain.policy import HPAScalingRules, ScalingPolicyType, SelectPolicy
from pdscaler.domain.reasons import Reason
from pdscaler.engine.history import ScaleEvent


def changes_in_period(
    events: Sequence[ScaleEvent], now: datetime, period_s: int
) -> tuple[int, int]:
    """Replicas added and replicas removed within the last ``period_s`` seconds."""
    if not events:
        return 0, 0
    cutoff = now - timedelta(seconds=period_s)
    added = sum(e.change for e in events if e.at > cutoff and e.change > 0)
    removed = -sum(e.change for e in events if e.at > cutoff and e.change < 0)
    return added, removed


def scale_up_limit(
    current_replicas: int, events: Sequence[ScaleEvent], rules: HPAScalingRules, now: datetime
) -> int:
    if rules.select_policy is SelectPolicy.DISABLED:
        return current_replicas
    pick = min if rules.select_policy is SelectPolicy.MIN else max
    proposals = []
    for policy in rules.policies or ():
        added, removed = changes_in_period(events, now, policy.period_seconds)
        start = current_replicas - added + removed
        if policy.type is ScalingPolicyType.PODS:
            proposals.append(start + policy.value)
        else:  # rounded up, or a small pool could never grow
            proposals.append(math.ceil(start * (1 + policy.value / 100)))
    return pick(proposals) if proposals else current_replicas


def scale_down_limit(
    current_replicas: int, events: Sequence[ScaleEvent], rules: HPAScalingRules, now: datetime
) -> int:
    if rules.select_policy is SelectPolicy.DISABLED:
        return current_replicas
    pick = max if rules.select_policy is SelectPolicy.MIN else min
    proposals = []
    for policy in rules.policies or ():
        added, removed = changes_in_period(events, now, policy.period_seconds)
        start = current_replicas - added + removed
        if policy.type is ScalingPolicyType.PODS:
            proposals.append(start - policy.value)
        else:  # truncated, as HPA's int32() conversion does
            proposals.append(int(start * (1 - policy.value / 100)))
    return pick(proposals) if proposals else current_replicas


def limit_replicas(
    desired_replicas: int,
    current_replicas: int,
    min_replicas: int,
    max_replicas: int,
    events: Sequence[ScaleEvent],
    up: HPAScalingRules,
    down: HPAScalingRules,
    now: datetime,
) -> Step:
    """Clamp ``desired_replicas`` by the rate policies, then by minReplicas/maxReplicas."""
    if desired_replicas > current_replicas:
        if up.select_policy is SelectPolicy.DISABLED:
            return Step("limit", current_replicas, Reason.SCALING_DISABLED, "scale-up disabled")
        limit = max(scale_up_limit(current_replicas, events, up, now), current_replicas)
        if max_replicas > limit:
            allowed, reason = limit, Reason.SCALE_UP_LIMIT
            message = f"the scale-up policies allow at most {limit} now"
        else:
            allowed, reason = max_replicas, Reason.TOO_MANY_REPLICAS
            message = f"capped at maxReplicas {max_replicas}"
        if desired_replicas > allowed:
            return Step("limit", allowed, reason, message)
    elif desired_replicas < current_replicas:
        if down.select_policy is SelectPolicy.DISABLED:
            return Step("limit", current_replicas, Reason.SCALING_DISABLED, "scale-down disabled")
        limit = min(scale_down_limit(current_replicas, events, down, now), current_replicas)
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

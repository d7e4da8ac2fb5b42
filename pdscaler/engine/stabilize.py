"""Stabilization windows, with exactly the Kubernetes HPA v2 semantics.

Of the recommendations made within the scale-up window (the new one included) the
lowest is the most the pool may grow to; of those within the scale-down window the
highest is the least it may shrink to. Between the two, the pool stays where it is.
(HPA: ``stabilizeRecommendationWithBehaviors``.)
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from pdscaler.domain.decision import Step
from pdscaler.domain.reasons import Reason
from pdscaler.engine.history import Recommendation


def stabilize_recommendation(
    recommendation: int,
    current_replicas: int,
    history: Iterable[Recommendation],
    now: datetime,
    up_window: timedelta,
    down_window: timedelta,
) -> Step:
    up_cutoff, down_cutoff = now - up_window, now - down_window
    up, down = recommendation, recommendation
    for past in history:
        if past.at > up_cutoff:
            up = min(up, past.replicas)
        if past.at > down_cutoff:
            down = max(down, past.replicas)
    if current_replicas < up:
        value = up
    elif current_replicas > down:
        value = down
    else:
        value = current_replicas
    if value == recommendation:
        return Step("stabilize", value, Reason.NOT_STABILIZED, "")
    if recommendation > current_replicas:
        window = f"{int(up_window.total_seconds())}s"
        return Step(
            "stabilize",
            value,
            Reason.SCALE_UP_STABILIZED,
            f"lowest recommendation in the last {window} is {up}",
        )
    window = f"{int(down_window.total_seconds())}s"
    return Step(
        "stabilize",
        value,
        Reason.SCALE_DOWN_STABILIZED,
        f"highest recommendation in the last {window} is {down}",
    )

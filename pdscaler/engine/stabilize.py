"""Stabilization windows, with exactly the Kubernetes HPA v2 semantics.

Of the recommendations made within the scale-up window (the new one included) the
lowest is the most the pool may grow to; of those within the scale-down window the
highest is the least it may shrink to. Between the two, the pool stays where it is.
(HPA: ``stabilizeRecommendationWithBehaviors``.)
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from operator import attrgetter

from pdscaler.domain.decision import Step
from pdscaler.domain.reasons import Reason
from pdscaler.engine.history import Recommendation


def stabilize_recommendation(
    recommendation: int,
    current_replicas: int,
    history: Sequence[Recommendation],
    now: datetime,
    up_window: timedelta,
    down_window: timedelta,
) -> Step:
    """``history`` oldest first, as :class:`PoolHistory` keeps it."""
    up = _extreme(min, recommendation, history, now - up_window)
    down = _extreme(max, recommendation, history, now - down_window)
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


_AT = attrgetter("at")
_REPLICAS = attrgetter("replicas")


def _extreme(
    pick: Callable[[Iterable[int]], int],
    recommendation: int,
    history: Sequence[Recommendation],
    cutoff: datetime,
) -> int:
    """``pick`` of ``recommendation`` and those in ``history`` made after ``cutoff``."""
    start = bisect_right(history, cutoff, key=_AT)
    if start == len(history):
        return recommendation
    return pick((recommendation, pick(map(_REPLICAS, history[start:]))))

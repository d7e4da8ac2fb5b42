"""What the engine remembers between ticks, as plain values it returns anew each tick.

The controller keeps one :class:`PoolHistory` per pool and rebuilds it from the decision
log at start-up, so that a restart neither forgets a stabilization window nor doubles a
scale-up.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from operator import attrgetter
from typing import NamedTuple


class Recommendation(NamedTuple):
    """A recommendation before stabilization, as HPA keeps them."""

    at: datetime
    replicas: int


class ScaleEvent(NamedTuple):
    """A change of replicas that was applied: positive up, negative down."""

    at: datetime
    change: int


_AT = attrgetter("at")


@dataclass(frozen=True)
class PoolHistory:
    """Recommendations and scale events are kept oldest first."""

    recommendations: tuple[Recommendation, ...] = ()
    scale_events: tuple[ScaleEvent, ...] = ()
    metric_failures: int = 0  # ticks in a row whose metrics were not all usable
    last_applied: int | None = None  # replicas pdscaler last wrote to the target
    backlog: tuple[datetime, float] | None = None  # (when, queued prefill tokens) last seen
    external_since: datetime | None = None  # when a change by someone else was first seen
    panic_until: datetime | None = None  # no scale-down before then: a burst was seen

    def with_recommendation(self, at: datetime, replicas: int, keep: timedelta) -> PoolHistory:
        recommendations = self.recommendations_after(at - keep, Recommendation(at, replicas))
        return replace(self, recommendations=recommendations)

    def recommendations_after(
        self, cutoff: datetime, new: Recommendation
    ) -> tuple[Recommendation, ...]:
        """The recommendations newer than ``cutoff``, then ``new``."""
        kept = self.recommendations[bisect_right(self.recommendations, cutoff, key=_AT) :]
        return (*kept, new)

    def with_scale(self, at: datetime, previous: int, applied: int, keep: timedelta) -> PoolHistory:
        """Record an applied write; the target now runs what pdscaler asked for."""
        kept = tuple(e for e in self.scale_events if e.at > at - keep)
        event = (ScaleEvent(at, applied - previous),) if applied != previous else ()
        return replace(
            self, scale_events=(*kept, *event), last_applied=applied, external_since=None
        )

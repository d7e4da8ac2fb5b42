"""The controller's seams: one small Protocol per outside system, owned here, where they
are used. Fakes live in ``control/fakes.py``; production implementations under
``metrics/``, ``actuator/`` and ``forecast/`` (and the simulator under ``sim/``) match them
structurally.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from pdscaler.domain.decision import TickSummary
from pdscaler.domain.leader import LeaderStatus
from pdscaler.domain.policy import ScaleTargetRef
from pdscaler.domain.signals import (
    PoolKey,
    PoolQuery,
    PoolSignals,
    ScaleState,
    SeriesKey,
    SignalName,
)


class MetricsSource(Protocol):
    def observe(self, pools: Sequence[PoolQuery], now: datetime) -> Mapping[PoolKey, PoolSignals]:
        """The signals of every pool at ``now``, each graded for quality.

        A pool missing from the answer, or a signal missing from a pool, is read as empty.
        Raising means the whole source failed; every signal is then graded ``error``.
        """
        ...

    def pod_load(self, pool: PoolQuery, now: datetime) -> Mapping[str, float]:
        """Running requests per pod of one pool, by pod name; empty when unknown."""
        ...


class Actuator(Protocol):
    def read_scale(self, namespace: str, target: ScaleTargetRef) -> ScaleState:
        """The target's current scale. Raises NotFound, Forbidden, Unavailable, ..."""
        ...

    def write_scale(
        self, namespace: str, target: ScaleTargetRef, replicas: int, resource_version: str | None
    ) -> str | None:
        """Set spec.replicas if the target is still at ``resource_version``.

        Returns the new resource version. Raises Conflict when the target changed since it
        was read (the next tick re-reads and re-decides), or another pdscaler error.
        """
        ...

    def prefer_removal(
        self, namespace: str, target: ScaleTargetRef, selector: str, load: Mapping[str, float]
    ) -> int:
        """Before a scale-down, mark which pods to remove first: the least loaded (``load``
        by pod name). Returns the pods marked; 0 where the workload cannot be told."""
        ...


class Leadership(Protocol):
    """Which replica of pdscaler runs the loop and writes: one at a time."""

    def step(self) -> bool:
        """Acquire or renew leadership; returns whether this replica leads now."""
        ...

    def confirm(self) -> bool:
        """Ask once more, right before a write, whether this replica still leads."""
        ...

    def release(self) -> None:
        """Step down (a clean stop)."""
        ...

    def status(self) -> LeaderStatus:
        """Leading or not, who leads, and why (for health and logs)."""
        ...


class HistorySource(Protocol):
    def history(
        self,
        pools: Sequence[PoolQuery],
        signal: SignalName,
        start: datetime,
        end: datetime,
        step_s: int = 60,
    ) -> Mapping[PoolKey, Sequence[tuple[datetime, float]]]:
        """The past of one signal for every pool, one value per ``step_s`` where known
        (range queries), oldest first; NaN and Inf left out."""
        ...


class Forecaster(Protocol):
    def update(self, key: SeriesKey, at: datetime, value: float) -> None:
        """Learn one observed value."""
        ...

    def seed(self, key: SeriesKey, points: Iterable[tuple[datetime, float]]) -> int:
        """Learn a stretch of the past (read from the history at start-up); values already
        learned live stay. Returns how many were taken."""
        ...

    def predict(self, key: SeriesKey, at: datetime, horizon_s: float) -> float | None:
        """The value expected ``horizon_s`` after ``at``; None without enough history.
        Never fits: fitting is :meth:`refit`'s, off the tick's path."""
        ...

    def refit(self, now: datetime, *, budget_s: float = math.inf) -> int:
        """Fit the series that are due, within ``budget_s``; returns how many."""
        ...

    def describe(self, key: SeriesKey) -> Mapping[str, Any]:
        """One series' forecast state for the audit: the model, a fallback, recent error."""
        ...


class TickObserver(Protocol):
    def tick_done(self, tick: TickSummary) -> None:
        """What one tick decided and did (its metrics, annotations). Called after the
        tick's work; it must not block, and what it raises is logged, not the tick's."""
        ...

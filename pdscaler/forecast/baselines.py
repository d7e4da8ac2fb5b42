"""Baseline forecasters: the last value, and the moving average over a window."""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from pdscaler.domain.signals import SeriesKey


class LastValue:
    """Tomorrow looks like now."""

    def __init__(self) -> None:
        self._last: dict[SeriesKey, float] = {}

    def update(self, key: SeriesKey, at: datetime, value: float) -> None:
        self._last[key] = value

    def seed(self, key: SeriesKey, points: Iterable[tuple[datetime, float]]) -> int:
        """The newest of ``points``, unless a value was learned live already."""
        past = [v for _, v in sorted(points, key=lambda p: p[0]) if math.isfinite(v) and v >= 0]
        if not past or key in self._last:
            return 0
        self._last[key] = past[-1]
        return 1

    def predict(self, key: SeriesKey, at: datetime, horizon_s: float) -> float | None:
        return self._last.get(key)

    def refit(self, now: datetime, *, budget_s: float = math.inf) -> int:
        return 0  # nothing to fit

    def describe(self, key: SeriesKey) -> dict[str, Any]:
        return {"model": "lastValue"}


class MovingAverage:
    """The mean of the values seen within the last ``window``."""

    def __init__(self, window: timedelta = timedelta(minutes=5)) -> None:
        self._window = window
        self._points: dict[SeriesKey, deque[tuple[datetime, float]]] = defaultdict(deque)

    def update(self, key: SeriesKey, at: datetime, value: float) -> None:
        points = self._points[key]
        points.append((at, value))
        while points and points[0][0] <= at - self._window:
            points.popleft()

    def seed(self, key: SeriesKey, points: Iterable[tuple[datetime, float]]) -> int:
        """The values of ``points`` within the window, before any learned live."""
        live = self._points[key]
        first = live[0][0] if live else None
        past = sorted((at, v) for at, v in points if math.isfinite(v) and v >= 0
                      and (first is None or at < first))  # fmt: skip
        newest = live[-1][0] if live else (past[-1][0] if past else None)
        if newest is None:
            return 0
        kept = [(at, v) for at, v in past if at > newest - self._window]
        self._points[key] = deque([*kept, *live])
        return len(kept)

    def predict(self, key: SeriesKey, at: datetime, horizon_s: float) -> float | None:
        points = self._points.get(key)
        if not points:
            return None
        return max(0.0, sum(v for _, v in points) / len(points))

    def refit(self, now: datetime, *, budget_s: float = math.inf) -> int:
        return 0  # nothing to fit

    def describe(self, key: SeriesKey) -> dict[str, Any]:
        return {"model": "movingAverage", "windowS": self._window.total_seconds()}

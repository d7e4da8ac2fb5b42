"""Baseline forecasters: the last value, and the moving average over a window."""

from __future__ import annotations

import math
from collections import defaultdict, deque
from datetime import datetime, timedelta
from typing import Any

from pdscaler.domain.signals import SeriesKey


class LastValue:
    """Tomorrow looks like now."""

    def __init__(self) -> None:
        self._last: dict[SeriesKey, float] = {}

    def update(self, key: SeriesKey, at: datetime, value: float) -> None:
        self._last[key] = value

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

    def predict(self, key: SeriesKey, at: datetime, horizon_s: float) -> float | None:
        points = self._points.get(key)
        if not points:
            return None
        return max(0.0, sum(v for _, v in points) / len(points))

    def refit(self, now: datetime, *, budget_s: float = math.inf) -> int:
        return 0  # nothing to fit

    def describe(self, key: SeriesKey) -> dict[str, Any]:
        return {"model": "movingAverage", "windowS": self._window.total_seconds()}

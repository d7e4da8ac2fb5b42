"""One signal's past as a regular series: the cleaning rule, and the features the
regression models learn from.

The cleaning rule (:func:`clean`), applied before every fit and every prediction:

1. A value that is NaN, +Inf, -Inf or negative is missing (no load signal is negative:
   such a sample is a broken query, not a measurement).
2. Points are placed on the grid of ``step_s`` (``round(time / step_s)``); of two points
   on the same step the later one counts.
3. A run of missing steps no longer than ``FILL_S`` (30 s) is filled with the last value
   before it: what the loop itself would have gone on seeing.
4. A longer run cuts the series: only the part after the last such gap is kept. Lags taken
   across a long gap would join two different stretches of load.

What is left is contiguous, one value per step, ending at the last good point. A model
given fewer steps than it needs raises :class:`ShortHistory`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

FILL_S = 30.0  # the longest run of missing steps filled with the last value
DAY_S = 86_400.0
WEEK_S = 7 * DAY_S
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)


class ShortHistory(ValueError):
    """Fewer clean, contiguous steps than a model needs."""


def clean(
    times: ArrayLike, values: ArrayLike, step_s: float, fill_s: float = FILL_S
) -> tuple[FloatArray, FloatArray]:
    """The series by the cleaning rule above: ``(times, values)``, one point per step.

    ``times`` are seconds since the epoch, ascending. Empty arrays when no value is good.
    """
    t = np.asarray(times, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if t.shape != v.shape or t.ndim != 1:
        raise ValueError(f"times and values must be 1-d and of one length: {t.shape}, {v.shape}")
    good = np.isfinite(v) & (v >= 0) & np.isfinite(t)
    t, v = t[good], v[good]
    if not len(t):
        return np.empty(0), np.empty(0)
    steps = np.rint(t / step_s).astype(np.int64)
    # the later of two points on one step counts: keep each step's last occurrence
    last = np.r_[steps[1:] != steps[:-1], True]
    steps, v = steps[last], v[last]
    fill_steps = math.floor(fill_s / step_s + 1e-9)
    gaps = np.diff(steps) - 1
    cuts = np.flatnonzero(gaps > fill_steps)
    if len(cuts):
        start = cuts[-1] + 1
        steps, v = steps[start:], v[start:]
    grid = np.arange(steps[0], steps[-1] + 1)
    # forward fill: each grid step takes the value of the last point at or before it
    filled = v[np.searchsorted(steps, grid, side="right") - 1]
    return grid * step_s, filled


def pinball(errors: FloatArray, quantile: float) -> FloatArray:
    """The pinball loss at ``quantile`` of each error (value - forecast): an error above
    the forecast costs ``quantile`` per unit, one below it ``1 - quantile``."""
    return np.maximum(quantile * errors, (quantile - 1) * errors)


def features(
    times: FloatArray,
    values: FloatArray,
    *,
    lags: int,
    windows: Sequence[int],
    calendar: bool,
) -> FloatArray:
    """One row per origin (each step with ``context(lags, windows)`` steps up to it):
    the last ``lags`` values, the mean and standard deviation over each window ending at
    the origin, and with ``calendar`` the time of day and of the week as sine and cosine.

    Row ``j`` describes the origin at index ``j + context - 1`` of ``values``.
    """
    context = context_steps(lags, windows)
    n = len(values) - context + 1
    if n <= 0:
        return np.empty((0, lags + 2 * len(windows) + (4 if calendar else 0)))
    ends = np.arange(context - 1, len(values))
    columns = [values[ends - k] for k in range(lags)]
    sums = np.r_[0.0, np.cumsum(values)]
    squares = np.r_[0.0, np.cumsum(values * values)]
    for w in windows:
        mean = (sums[ends + 1] - sums[ends + 1 - w]) / w
        second = (squares[ends + 1] - squares[ends + 1 - w]) / w
        columns += [mean, np.sqrt(np.maximum(second - mean * mean, 0.0))]
    if calendar:
        at = times[ends]
        day = 2 * np.pi * (at % DAY_S) / DAY_S
        week = 2 * np.pi * ((at + _EPOCH_WEEKDAY * DAY_S) % WEEK_S) / WEEK_S
        columns += [np.sin(day), np.cos(day), np.sin(week), np.cos(week)]
    return np.column_stack(columns)


def context_steps(lags: int, windows: Sequence[int]) -> int:
    """How many steps up to an origin its features read."""
    return max(lags, *windows) if windows else lags

"""Forecasting models for one signal sampled every ``step_s`` seconds: Holt's linear trend,
a ridge regression on lag features, and a gradient-boosting model of an upper quantile.

They are scikit-learn estimators: ``__init__`` stores its parameters unchanged, ``fit``
learns (what it learns ends in ``_``), and ``get_params``/``set_params``/``clone`` work.

- ``fit(times, values, horizon_steps)`` learns from a series; ``times`` are seconds since
  the epoch. The series is cleaned first (``series.clean``: NaN, Inf and negative values
  are missing, short gaps are filled, a long gap cuts the series).
- ``predict(horizon_steps, times=None, values=None)`` forecasts ``horizon_steps`` steps
  after the last point: of the series given to ``fit``, or of ``times``/``values`` when
  given, a later stretch of the same series. It never learns: the learned state is
  only applied to the newer values. The forecast is never below zero.
- ``predict_path(horizon_steps, times, values)`` gives, in one pass, the forecast
  ``predict`` would make at each step of a later stretch (from the fit's last step on),
  each reading only the values up to its step: what a rolling-origin backtest needs
  between two fits, without a call per step.
- ``learned()`` sums up what the fit learned, small and JSON-ready, for the audit
  (empty before a fit).

The regression models forecast **directly**: a row's target is the value
``horizon_steps`` steps after its origin, so one fitted model serves one horizon, and
``predict`` at any other horizon raises :class:`HorizonNotFitted`. The loop's horizon is
long (the cold start plus an interval: 13 steps and more), and fixed for a policy. A
recursive model would feed its own forecasts back as lags over all those steps and pile
up their errors; for a quantile model it is not even the right quantity, since the upper
quantile fed back is not an observation, and chaining one-step quantiles does not give
the quantile thirteen steps on.

This module does no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge

from pdscaler.forecast.series import (
    FloatArray,
    ShortHistory,
    clean,
    context_steps,
    features,
)

MIN_ROWS = 30  # the fewest training rows a regression model is fitted on


class HorizonNotFitted(ValueError):
    """A direct model asked for a horizon it was not fitted for."""


class Holt(BaseEstimator):  # type: ignore[misc]
    """Holt's linear trend (double exponential smoothing), with a damped trend.

    ``alpha`` weighs a new value against the level, ``beta`` a new slope against the
    trend; the trend's step ``i`` ahead counts ``damping ** i`` (1.0: not damped), so a
    long horizon does not run away with a short-lived slope. ``alpha`` or ``beta`` left
    None is chosen by ``fit`` from ``ALPHAS``/``BETAS``: the pair whose forecasts
    ``horizon_steps`` ahead erred least (mean absolute error) over the series. A noisy
    signal gets a small ``alpha`` (a long memory), a smooth one a large ``alpha``.
    """

    ALPHAS = (0.03, 0.1, 0.3, 1.0)
    BETAS = (0.0, 0.02, 0.1)
    BURN_IN = 12  # steps from the start before a forecast counts in that choice

    def __init__(
        self,
        alpha: float | None = None,
        beta: float | None = None,
        damping: float = 0.9,
        step_s: float = 5.0,
    ) -> None:
        self.alpha = alpha
        self.beta = beta
        self.damping = damping
        self.step_s = step_s

    def fit(self, times: ArrayLike, values: ArrayLike, horizon_steps: int = 1) -> Self:
        alphas = self.ALPHAS if self.alpha is None else (self.alpha,)
        betas = self.BETAS if self.beta is None else (self.beta,)
        if not (all(0 < a <= 1 for a in alphas) and all(0 <= b <= 1 for b in betas)
                and 0 < self.damping <= 1):  # fmt: skip
            raise ValueError(f"Holt needs 0 < alpha <= 1, 0 <= beta <= 1, 0 < damping <= 1: "
                             f"{self.alpha}, {self.beta}, {self.damping}")  # fmt: skip
        t, v = clean(times, values, self.step_s)
        if len(v) < 2:
            raise ShortHistory(f"Holt needs 2 steps, got {len(v)}")
        runs = [(*self._run(a, b, v, horizon_steps), a, b) for a in alphas for b in betas]
        _, self.level_, self.trend_, self.alpha_, self.beta_ = min(runs, key=lambda r: r[0])
        self.end_ = float(t[-1])
        return self

    def predict(
        self,
        horizon_steps: int,
        times: ArrayLike | None = None,
        values: ArrayLike | None = None,
    ) -> float:
        fitted = max(0.0, self.level_ + self._ahead(horizon_steps) * self.trend_)
        if times is None or values is None:
            return fitted
        path = self.predict_path(horizon_steps, times, values)
        if not len(path):
            raise ShortHistory("the series was cut by a gap since the fit")
        return fitted if math.isnan(path[-1]) else float(path[-1])

    def predict_path(self, horizon_steps: int, times: ArrayLike, values: ArrayLike) -> FloatArray:
        """The forecast ``predict`` would give at each step of ``times``/``values`` (a
        later stretch of the fitted series), from the fit's last step on; NaN before it.
        Aligned with ``clean(times, values)``."""
        t, v = clean(times, values, self.step_s)
        path = np.full(len(v), np.nan)
        ahead, half = self._ahead(horizon_steps), self.step_s / 2
        a, b, phi = self.alpha_, self.beta_, self.damping
        level, trend = self.level_, self.trend_
        if len(t) and t[0] > self.end_ + half:
            raise ShortHistory("the series was cut by a gap since the fit")
        path[np.abs(t - self.end_) <= half] = max(0.0, level + ahead * trend)
        after = np.flatnonzero(t > self.end_ + half)
        for i, value in zip(after.tolist(), v[after].tolist(), strict=True):
            previous = level
            level = a * value + (1 - a) * (level + phi * trend)
            trend = b * (level - previous) + (1 - b) * phi * trend
            path[i] = max(0.0, level + ahead * trend)
        return path

    def learned(self) -> dict[str, float]:
        """The smoothing chosen and the state at the fit's last step."""
        if not hasattr(self, "level_"):
            return {}
        return {"alpha": self.alpha_, "beta": self.beta_, "level": float(self.level_),
                "trend": float(self.trend_)}  # fmt: skip

    def _ahead(self, horizon_steps: int) -> float:
        """How many trends the forecast ``horizon_steps`` ahead adds to the level."""
        phi = self.damping
        return float(sum(phi**i for i in range(1, horizon_steps + 1)))

    def _run(
        self, alpha: float, beta: float, values: FloatArray, horizon_steps: int
    ) -> tuple[float, float, float]:
        """Smooth ``values``: the mean absolute error of the forecasts ``horizon_steps``
        ahead made on the way (after ``BURN_IN``), and the last level and trend."""
        ahead, phi = self._ahead(horizon_steps), self.damping
        forecasts = np.empty(len(values))
        level, trend = float(values[0]), 0.0
        forecasts[0] = level
        for i, value in enumerate(values[1:].tolist(), start=1):
            previous = level
            level = alpha * value + (1 - alpha) * (level + phi * trend)
            trend = beta * (level - previous) + (1 - beta) * phi * trend
            forecasts[i] = level + ahead * trend
        scored = forecasts[self.BURN_IN : len(values) - horizon_steps]
        actual = values[self.BURN_IN + horizon_steps :]
        error = float(np.mean(np.abs(actual - scored))) if len(actual) else 0.0
        return error, level, trend


class _DirectModel(BaseEstimator):  # type: ignore[misc]
    """A regression on the features of ``series.features``, one horizon per fit.

    Values are divided by their mean over the fit (``scale_``), so that the features, the
    target and the regularization mean the same at 2 requests/s and at 2000 tokens/s.
    """

    lags: int
    windows: Sequence[int]
    step_s: float
    calendar: bool

    def _regressor(self) -> Any:
        raise NotImplementedError

    def _target_base(self, rows: FloatArray) -> FloatArray:
        """What the regressor's target is measured from, per row (zero: the value)."""
        return np.zeros(len(rows))

    def fit(self, times: ArrayLike, values: ArrayLike, horizon_steps: int = 1) -> Self:
        if horizon_steps < 1:
            raise ValueError(f"horizon_steps must be at least 1, got {horizon_steps}")
        t, v = clean(times, values, self.step_s)
        context = context_steps(self.lags, self.windows)
        rows = len(v) - context + 1 - horizon_steps
        if rows < MIN_ROWS:
            needed = context + horizon_steps + MIN_ROWS - 1
            raise ShortHistory(f"{type(self).__name__} needs {needed} steps for a "
                               f"{horizon_steps}-step horizon, got {len(v)}")  # fmt: skip
        mean = float(v.mean())
        self.scale_ = mean if mean > 0 else 1.0
        x = self._features(t, v / self.scale_)[:rows]
        y = v[context - 1 + horizon_steps :] / self.scale_ - self._target_base(x)
        self.regressor_ = self._regressor().fit(x, y)
        self.horizon_steps_ = horizon_steps
        self.tail_ = (t[-context:], v[-context:])
        return self

    def predict(
        self,
        horizon_steps: int,
        times: ArrayLike | None = None,
        values: ArrayLike | None = None,
    ) -> float:
        if horizon_steps != self.horizon_steps_:
            raise HorizonNotFitted(
                f"fitted for {self.horizon_steps_} steps ahead, asked for {horizon_steps}"
            )
        context = context_steps(self.lags, self.windows)
        if times is None or values is None:
            t, v = self.tail_
        else:
            times, values = np.asarray(times, float), np.asarray(values, float)
            # only the last context steps (and a gap's worth) are read: clean just those
            t, v = clean(times[-4 * context :], values[-4 * context :], self.step_s)
        if len(v) < context:
            raise ShortHistory(f"a forecast reads {context} steps, {len(v)} are clean")
        x = self._features(t[-context:], v[-context:] / self.scale_)
        predicted = self.regressor_.predict(x) + self._target_base(x)
        return max(0.0, float(predicted[-1]) * self.scale_)

    def predict_path(self, horizon_steps: int, times: ArrayLike, values: ArrayLike) -> FloatArray:
        """The forecast ``predict`` would give at each step of ``times``/``values`` (a
        later stretch of the fitted series), from the fit's last step on; NaN before it
        and where the features lack context. Aligned with ``clean(times, values)``."""
        if horizon_steps != self.horizon_steps_:
            raise HorizonNotFitted(
                f"fitted for {self.horizon_steps_} steps ahead, asked for {horizon_steps}"
            )
        t, v = clean(times, values, self.step_s)
        path = np.full(len(v), np.nan)
        context = context_steps(self.lags, self.windows)
        if len(v) < context:
            return path
        x = self._features(t, v / self.scale_)  # row j: the origin at index j + context - 1
        predicted = (self.regressor_.predict(x) + self._target_base(x)) * self.scale_
        path[context - 1 :] = np.maximum(predicted, 0.0)
        path[t < self.tail_[0][-1] - self.step_s / 2] = np.nan
        return path

    def learned(self) -> dict[str, float | int]:
        """The horizon fitted, the scale the values were divided by, the features read."""
        if not hasattr(self, "regressor_"):
            return {}
        return {"horizonSteps": self.horizon_steps_, "scale": float(self.scale_),
                "features": int(self.regressor_.n_features_in_)}  # fmt: skip

    def _features(self, t: FloatArray, v: FloatArray) -> FloatArray:
        return features(t, v, lags=self.lags, windows=self.windows, calendar=self.calendar)


class RidgeLags(_DirectModel):
    """A ridge regression of the value ``horizon`` steps ahead on the last ``lags`` values,
    the mean and standard deviation over each of ``windows`` (in steps), and the time of
    day and of the week (sine and cosine; with ``calendar``).
    """

    def __init__(
        self,
        lags: int = 12,
        windows: Sequence[int] = (12, 60),
        alpha: float = 1.0,
        step_s: float = 5.0,
        calendar: bool = True,
    ) -> None:
        self.lags = lags
        self.windows = windows
        self.alpha = alpha
        self.step_s = step_s
        self.calendar = calendar

    def _regressor(self) -> Any:
        return Ridge(alpha=self.alpha)

    def learned(self) -> dict[str, float | int]:
        summary = super().learned()
        if summary:
            summary["coefficients"] = int(self.regressor_.coef_.size)
            summary["intercept"] = float(self.regressor_.intercept_)
        return summary


class QuantileGbr(_DirectModel):
    """The ``quantile`` of the value ``horizon`` steps ahead, by gradient boosting
    (``HistGradientBoostingRegressor`` with quantile loss) on the features of
    :class:`RidgeLags`.

    The target is the change from the mean over the first window, not the value: trees
    cannot forecast a value outside the range they were fitted on, and a change carries
    over to a level the fit has not seen.
    """

    def __init__(
        self,
        quantile: float = 0.9,
        lags: int = 6,
        windows: Sequence[int] = (12, 60),
        step_s: float = 5.0,
        calendar: bool = False,
        max_iter: int = 30,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 15,
        min_samples_leaf: int = 40,
        random_state: int = 0,
    ) -> None:
        self.quantile = quantile
        self.lags = lags
        self.windows = windows
        self.step_s = step_s
        self.calendar = calendar
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.random_state = random_state

    def _regressor(self) -> Any:
        return HistGradientBoostingRegressor(
            loss="quantile",
            quantile=self.quantile,
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            early_stopping=False,
            random_state=self.random_state,
        )

    def learned(self) -> dict[str, float | int]:
        summary = super().learned()
        if summary:
            summary["iterations"] = int(self.regressor_.n_iter_)
        return summary

    def _target_base(self, rows: FloatArray) -> FloatArray:
        # the first window's mean sits right after the lags (see series.features)
        return rows[:, self.lags] if self.windows else np.zeros(len(rows))

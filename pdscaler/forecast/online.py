"""A model forecaster behind the ``Forecaster`` protocol: one model per series, refitted on
a schedule, with the last value as its fallback.

``update`` and ``predict`` run in the tick and stay cheap: ``update`` appends to a bounded
history, ``predict`` applies the fitted model to the newest values. **Predict never
fits.** Fitting is ``refit``'s job, which a scheduler runs off the tick: ``refit_due``
names the series whose model is missing, older than ``refit_every_s``, or fitted for
another horizon.

``predict`` falls back to the last value, and counts the reason in ``fallbacks``:

- ``noHistory``: no usable value yet (none came, or only NaN, Inf or negative ones); the
  forecast is None, as the last-value baseline's would be;
- ``shortHistory``: fewer than ``min_history_s`` of clean, contiguous history (see the
  cleaning rule in ``series``), too few steps since a long gap for the model to read, or
  a fit that found too little history for the horizon asked;
- ``notFitted``: enough history, but no fit yet for this horizon (a refit is due);
- ``fitFailed``: the last fit raised; it is tried again ``refit_every_s`` later;
- ``predictFailed``: the model raised, or answered NaN or Inf.

With ``upper``, the forecast is the policy's upper ``quantile``, not the point one: the point
forecast (the model's, or the fallback's last value) plus the ``quantile``-th of the
residuals (value - point forecast) of the last forecasts that came due, when positive.
That is split conformal prediction on a sliding window: it calibrates any point model,
and for the quantile model (already at the quantile) it corrects a biased fit.

``describe(key)`` gives the audit: the model and its parameters, whether and why the
last forecast fell back, the fit's age and time, the recent error against what came (of
the point forecast; the pinball loss of the upper one) and the upper shift.

The tick (``update``, ``predict``) and the fits (``refit``) may run on different threads:
the state is behind one lock, and a fit runs outside it, on a copy of the history.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from bisect import bisect_left, insort
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from itertools import pairwise
from typing import Any, Protocol, Self

import numpy as np
from numpy.typing import ArrayLike

from pdscaler.domain.signals import SeriesKey
from pdscaler.forecast.series import FILL_S, ShortHistory

log = logging.getLogger(__name__)


class SeriesModel(Protocol):
    """What ``models`` provides: see that module for the contract."""

    def fit(self, times: ArrayLike, values: ArrayLike, horizon_steps: int = 1) -> Self: ...

    def predict(
        self, horizon_steps: int, times: ArrayLike | None = None, values: ArrayLike | None = None
    ) -> float: ...


# The upper quantile: the residuals of the last RESIDUALS_KEPT forecasts that came due, once
# there are RESIDUALS_NEEDED (10 and 1 minutes at a 5 s step).
RESIDUALS_KEPT = 120
RESIDUALS_NEEDED = 12


class FallbackReason(StrEnum):
    NO_HISTORY = "noHistory"
    SHORT_HISTORY = "shortHistory"
    NOT_FITTED = "notFitted"
    FIT_FAILED = "fitFailed"
    PREDICT_FAILED = "predictFailed"


@dataclass
class _Fit:
    model: SeriesModel
    horizon_steps: int
    at_s: float
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)  # see model_params


@dataclass
class _Series:
    points: deque[tuple[float, float]]  # (seconds since the epoch, value), good values only
    run_start_s: float | None = None  # where the current contiguous stretch begins
    dropped: int = 0  # values left out by the cleaning rule (NaN, Inf, negative)
    horizon_steps: int | None = None  # the horizon last asked for
    fit: _Fit | None = None
    fit_error: str | None = None  # why the last fit failed
    fit_failure: FallbackReason = FallbackReason.FIT_FAILED  # or SHORT_HISTORY
    failed_at_s: float | None = None
    seen_s: float = -math.inf  # the last update or predict
    fallback: FallbackReason | None = None
    # forecasts waiting for their value: (due at, point forecast, the value when forecast,
    # upper forecast)
    pending: deque[tuple[float, float, float, float]] = field(default_factory=deque)
    # value - point forecast, per forecast that came due: for the upper quantile
    residuals: deque[float] = field(default_factory=lambda: deque(maxlen=RESIDUALS_KEPT))
    ordered: list[float] = field(default_factory=list)  # the same residuals, sorted
    shift: float = 0.0  # the quantile of the residuals, when there are enough of them
    # per forecast that came due: (|error|, pinball loss, |error| of the last value)
    scored: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=120))


class OnlineForecaster:
    def __init__(
        self,
        model_factory: Callable[[], SeriesModel],
        *,
        name: str,
        min_history_s: float,
        refit_every_s: float = 60.0,
        step_s: float = 5.0,
        quantile: float = 0.9,
        history_s: float = 2 * 3600.0,
        timer: Callable[[], float] = time.perf_counter,
        upper: bool = False,
    ) -> None:
        """``model_factory`` makes an unfitted model (one per series and fit); ``name``
        labels it in the audit; ``quantile`` is the one the recent pinball loss is scored
        at; ``history_s`` bounds the history kept per series; ``timer`` times fits."""
        if not step_s > 0 or not refit_every_s > 0 or min_history_s < 0:
            raise ValueError("step_s and refit_every_s must be positive, min_history_s >= 0")
        self.name = name
        self.fallbacks: Counter[FallbackReason] = Counter()
        self.model_factory = model_factory
        self._min_history_s = min_history_s
        self._refit_every_s = refit_every_s
        self._step_s = step_s
        self._quantile = quantile
        self._max_points = max(2, math.ceil(history_s / step_s))
        # two good values further apart than this have a gap between them that the
        # cleaning rule does not fill (see series.clean)
        self._cut_after_s = (math.floor(FILL_S / step_s + 1e-9) + 1.5) * step_s
        self._timer = timer
        self._upper = upper
        self._series: dict[SeriesKey, _Series] = {}
        self._init_params: dict[str, Any] | None = None  # an unfitted model's, made once
        self._lock = threading.Lock()

    # -- the tick ----------------------------------------------------------------------

    def update(self, key: SeriesKey, at: datetime, value: float) -> None:
        at_s = at.timestamp()
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = self._new_series()
            series.seen_s = max(series.seen_s, at_s)
            self._score(series, at_s, value)
            if not (math.isfinite(value) and value >= 0):
                series.dropped += 1
                return
            points = series.points
            if points and at_s <= points[-1][0]:
                return  # a value for a time already learned (a repeated tick): keep the first
            if not points or at_s - points[-1][0] > self._cut_after_s:
                series.run_start_s = at_s  # a gap longer than the cleaning rule fills
            points.append((at_s, value))

    def seed(self, key: SeriesKey, points: Iterable[tuple[datetime, float]]) -> int:
        """Learn a stretch of the past at once (the history read from Prometheus at
        start-up), by ``update``'s cleaning rule; where a time was already learned live,
        the live value stays. Returns how many values were taken."""
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = self._new_series()
            known = {t for t, _ in series.points}
            past = [(at.timestamp(), v) for at, v in points if math.isfinite(v) and v >= 0]
            taken = [(t, v) for t, v in past if t not in known]
            if not taken:
                return 0
            merged = sorted([*series.points, *taken])
            series.points = deque(merged, maxlen=self._max_points)
            series.seen_s = max(series.seen_s, series.points[-1][0])
            # the current contiguous stretch: back from the newest value to the first gap
            # longer than the cleaning rule fills
            times = [t for t, _ in series.points]
            start = times[-1]
            for later, earlier in pairwise(reversed(times)):
                if later - earlier > self._cut_after_s:
                    break
                start = earlier
            series.run_start_s = start
            return len(taken)

    def predict(self, key: SeriesKey, at: datetime, horizon_s: float) -> float | None:
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = self._new_series()
            at_s = at.timestamp()
            series.seen_s = max(series.seen_s, at_s)
            # forecasts that came due with no value since cannot be scored any more
            while series.pending and series.pending[0][0] < at_s - self._step_s / 2:
                series.pending.popleft()
            if not series.points:
                self._fell_back(series, FallbackReason.NO_HISTORY)
                return None
            horizon_steps = max(1, round(horizon_s / self._step_s))
            series.horizon_steps = horizon_steps
            last = series.points[-1][1]
            predicted, reason = self._model_forecast(series, horizon_steps)
            if reason is not None:
                self._fell_back(series, reason)
                predicted = last
            else:
                series.fallback = None
            point = max(0.0, predicted)
            forecast = point + series.shift
            series.pending.append((at_s + horizon_s, point, last, forecast))
            return forecast

    def _model_forecast(
        self, series: _Series, horizon_steps: int
    ) -> tuple[float, FallbackReason | None]:
        if self._history_s(series) < self._min_history_s:
            return math.nan, FallbackReason.SHORT_HISTORY
        if series.fit_error is not None:
            return math.nan, series.fit_failure
        fit = series.fit
        if fit is None or fit.horizon_steps != horizon_steps:
            return math.nan, FallbackReason.NOT_FITTED
        times, values = _arrays(series.points)
        try:
            predicted = fit.model.predict(horizon_steps, times, values)
        except ShortHistory:
            return math.nan, FallbackReason.SHORT_HISTORY
        except Exception:
            log.exception("%s: predict failed", self.name)
            return math.nan, FallbackReason.PREDICT_FAILED
        if not math.isfinite(predicted):
            return math.nan, FallbackReason.PREDICT_FAILED
        return predicted, None

    # -- fitting, off the tick ------------------------------------------------------------

    def refit_due(self, now: datetime) -> list[SeriesKey]:
        """The series to fit now: asked for, with enough history, and with no model, one
        for another horizon, or one (or a failure) at least ``refit_every_s`` old."""
        now_s = now.timestamp()
        with self._lock:
            return [key for key, s in self._series.items() if self._due(s, now_s)]

    def _due(self, series: _Series, now_s: float) -> bool:
        if series.horizon_steps is None or self._history_s(series) < self._min_history_s:
            return False
        if series.fit_error is not None:
            return series.failed_at_s is None or now_s - series.failed_at_s >= self._refit_every_s
        fit = series.fit
        return (
            fit is None
            or fit.horizon_steps != series.horizon_steps
            or now_s - fit.at_s >= self._refit_every_s
        )

    def refit(
        self, now: datetime, keys: Iterable[SeriesKey] | None = None, budget_s: float = math.inf
    ) -> int:
        """Fit the due series (or ``keys``), until ``budget_s`` seconds are spent; the rest
        stay due. Returns how many were fitted. A fit that raises is logged and kept for
        the series' audit; the series then falls back until a fit succeeds. Series neither
        updated nor asked for within the history kept are forgotten."""
        self._forget_before(now.timestamp() - self._max_points * self._step_s)
        started = self._timer()
        done = 0
        for key in self.refit_due(now) if keys is None else list(keys):
            if self._timer() - started >= budget_s:
                break
            self._refit_one(key, now.timestamp())
            done += 1
        return done

    def _refit_one(self, key: SeriesKey, now_s: float) -> None:
        with self._lock:  # snapshot under the lock, fit outside it: the tick goes on
            series = self._series.get(key)
            if series is None or series.horizon_steps is None:
                return
            horizon_steps = series.horizon_steps
            times, values = _arrays(series.points)
        started = self._timer()
        try:
            model = self.model_factory().fit(times, values, horizon_steps)
        except Exception as e:
            short = isinstance(e, ShortHistory)  # e.g. a horizon longer than the history
            if not short:
                log.warning("%s: fitting %s failed: %s: %s", self.name, key, type(e).__name__, e)
            with self._lock:
                series.fit, series.failed_at_s = None, now_s
                series.fit_error = f"{type(e).__name__}: {e}"
                series.fit_failure = (
                    FallbackReason.SHORT_HISTORY if short else FallbackReason.FIT_FAILED
                )
            return
        fit = _Fit(model, horizon_steps, now_s, self._timer() - started, model_params(model))
        with self._lock:
            series.fit, series.fit_error, series.failed_at_s = fit, None, None

    def expect(self, key: SeriesKey, horizon_s: float) -> None:
        """Set the horizon ``key`` will be forecast at, as ``predict`` does, but without
        forecasting: a ``refit`` of ``key`` can then fit the model before the first
        ``predict`` asks (for a forecaster that takes a series over from another)."""
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = self._new_series()
            series.horizon_steps = max(1, round(horizon_s / self._step_s))

    def history(self, key: SeriesKey) -> tuple[np.ndarray, np.ndarray]:
        """A copy of the good values kept for ``key``: ``(times, values)``, times in seconds
        since the epoch, ascending; not cleaned (``series.clean`` fills and cuts gaps)."""
        with self._lock:
            series = self._series.get(key)
            return _arrays(series.points if series is not None else ())

    # -- audit -----------------------------------------------------------------------------

    def describe(self, key: SeriesKey) -> dict[str, Any]:
        """The state of one series' forecast, for the audit (JSON-ready): ``fallback`` is
        why the last forecast was the last value (None: the model's), ``recent*`` score
        the last forecasts that came due, the model's and the last value's; ``params``
        are the fitted model's (see :func:`model_params`), or an unfitted one's."""
        with self._lock:
            series = self._series.get(key) or self._new_series()
            fit, scored = series.fit, list(series.scored)
            errors = np.array(scored).reshape(-1, 3)
            if fit is None and self._init_params is None:
                self._init_params = model_params(self.model_factory())
            return {
                "model": self.name,
                "params": fit.params if fit is not None else self._init_params,
                "fallback": None if series.fallback is None else series.fallback.value,
                "horizonS": None if series.horizon_steps is None
                else series.horizon_steps * self._step_s,
                "historyS": self._history_s(series),
                "dropped": series.dropped,
                "fittedAt": None if fit is None else _iso(fit.at_s),
                "fitSeconds": None if fit is None else round(fit.seconds, 4),
                "fitError": series.fit_error,
                "scored": len(scored),
                "recentMae": float(errors[:, 0].mean()) if scored else None,
                "recentPinball": float(errors[:, 1].mean()) if scored else None,
                "lastValueMae": float(errors[:, 2].mean()) if scored else None,
                "upperShift": series.shift,
            }  # fmt: skip

    # -- helpers ---------------------------------------------------------------------------

    def _forget_before(self, cutoff_s: float) -> None:
        with self._lock:
            for key in [k for k, s in self._series.items() if s.seen_s < cutoff_s]:
                del self._series[key]

    def _new_series(self) -> _Series:
        return _Series(deque(maxlen=self._max_points))

    def _history_s(self, series: _Series) -> float:
        if not series.points or series.run_start_s is None:
            return 0.0
        start = max(series.run_start_s, series.points[0][0])
        return series.points[-1][0] - start + self._step_s

    def _fell_back(self, series: _Series, reason: FallbackReason) -> None:
        series.fallback = reason
        self.fallbacks[reason] += 1

    def _score(self, series: _Series, at_s: float, value: float) -> None:
        """Score the forecasts that came due by ``at_s`` against ``value``."""
        pending, half = series.pending, self._step_s / 2
        while pending and pending[0][0] <= at_s + half:
            due_s, point, last, forecast = pending.popleft()
            if due_s >= at_s - half and math.isfinite(value):  # a missed value scores nothing
                error = value - forecast
                pinball = max(self._quantile * error, (self._quantile - 1) * error)
                series.scored.append((abs(value - point), pinball, abs(value - last)))
                if self._upper:
                    self._add_residual(series, value - point)

    def _add_residual(self, series: _Series, residual: float) -> None:
        """Keep ``residual`` (value - point forecast), in arrival order and sorted, and
        update the shift that lifts a point forecast to the policy's upper quantile: the
        ``quantile``-th of the recent residuals, if positive, once there are
        ``RESIDUALS_NEEDED`` of them (split conformal prediction on a sliding window)."""
        residuals, ordered = series.residuals, series.ordered
        if len(residuals) == residuals.maxlen:  # the oldest goes
            del ordered[bisect_left(ordered, residuals[0])]
        residuals.append(residual)
        insort(ordered, residual)
        if len(ordered) >= RESIDUALS_NEEDED:
            at = min(len(ordered) - 1, int(self._quantile * len(ordered)))
            series.shift = max(0.0, ordered[at])


def model_params(model: object) -> dict[str, Any]:
    """A model's parameters for the audit, JSON-ready: its ``get_params()`` (scikit-learn's
    convention: what ``__init__`` took), and once fitted, the small summary of what it
    learned that its ``learned()`` gives, under ``learned``. Empty for a model that has
    neither."""
    get_params = getattr(model, "get_params", None)
    params = dict(get_params(deep=False)) if callable(get_params) else {}
    learned = getattr(model, "learned", None)
    if callable(learned):
        summary = learned()
        if summary:
            params["learned"] = summary
    return {str(k): _json_ready(v) for k, v in params.items()}


def _json_ready(value: Any) -> Any:
    """``value`` as JSON can hold it: tuples as lists, numpy numbers as Python's, NaN and
    Inf as None, and anything else unknown as its text."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_json_ready(v) for v in value]
    return str(value)


def _arrays(points: Iterable[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    pairs = np.array(list(points), dtype=np.float64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()

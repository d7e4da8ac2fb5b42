"""Rolling-origin evaluation: a series is replayed through each forecaster one step at a
time, as the loop would feed it, refitting whenever a refit is due; each step's forecast
for the step ``horizon`` ahead is scored against the value that came.

Every forecaster is scored on the same origins: those from ``warmup_steps`` on (so every
model has had the history it waits for) to the last one whose target is in the series.
Scores: MAE; MAPE over the targets above zero; the pinball loss at ``quantile`` (an
under-forecast costs ``quantile`` per unit, an over-forecast ``1 - quantile``: the price
of too few replicas against too many); and the coverage, the share of targets at or
below the forecast (for a forecast of the ``quantile``, close to ``quantile``).

No I/O: the series comes in, scores go out (only the fit times read a clock).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from pdscaler.domain.policy import ForecastModel, Role
from pdscaler.domain.signals import PoolKey, SignalName
from pdscaler.forecast.auto import AutoForecaster
from pdscaler.forecast.online import OnlineForecaster
from pdscaler.forecast.registry import AnyForecaster, forecaster_for
from pdscaler.forecast.series import FloatArray, pinball

START = datetime(2024, 1, 1, tzinfo=UTC)  # where a replayed series' first step lies
KEY = (PoolKey("backtest", "trace", Role.PREFILL), SignalName.ARRIVAL_RATE)
MODELS = (
    ForecastModel.LAST_VALUE,
    ForecastModel.MOVING_AVERAGE,
    ForecastModel.HOLT,
    ForecastModel.RIDGE,
    ForecastModel.QUANTILE_GBR,
)


@dataclass(frozen=True)
class Score:
    model: str
    mae: float
    mape: float
    pinball: float
    origins: int
    coverage: float  # the share of targets at or below the forecast (a quantile's: ~q)
    fallbacks: Mapping[str, int] = field(default_factory=dict)  # at the scored origins
    fit_ms: float = 0.0  # mean time of one fit


def arrival_rate(arrivals_s: Sequence[float], step_s: float) -> FloatArray:
    """Requests per second in each step from the first arrival; a last step that the
    arrivals do not fill is left out (it would read as a drop in load)."""
    at = np.asarray(arrivals_s, dtype=np.float64)
    if not len(at):
        return np.empty(0)
    at = at - at.min()
    steps = math.floor(at.max() / step_s)
    counts = np.bincount((at // step_s).astype(np.int64), minlength=steps + 1)[:steps]
    return counts / step_s


@dataclass
class Replay:
    """What a forecaster said at each step of a series."""

    forecasts: FloatArray  # at step i, for step i + horizon; NaN where it said nothing
    fallbacks: list[str | None]  # at step i, the reason it fell back to the last value
    fit_s: float  # mean time of one fit


def replay(
    forecaster: AnyForecaster,
    values: FloatArray,
    *,
    step_s: float,
    horizon_steps: int,
    start: datetime = START,
) -> Replay:
    """Feed ``values`` to ``forecaster`` one step at a time and ask for a forecast at each.
    Due refits run before the step's forecast, as if a scheduler off the tick kept up."""
    online = forecaster if isinstance(forecaster, OnlineForecaster | AutoForecaster) else None
    result = Replay(np.full(len(values), np.nan), [None] * len(values), 0.0)
    fits = 0
    for i, value in enumerate(values.tolist()):
        at = start + timedelta(seconds=i * step_s)
        forecaster.update(KEY, at, value)
        if online is not None and online.refit_due(at):
            started = time.perf_counter()
            fits += online.refit(at)
            result.fit_s += time.perf_counter() - started
        before = online.fallbacks.total() if online is not None else 0
        predicted = forecaster.predict(KEY, at, horizon_steps * step_s)
        if online is not None and online.fallbacks.total() > before:
            result.fallbacks[i] = online.describe(KEY)["fallback"]
        if predicted is not None:
            result.forecasts[i] = predicted
    result.fit_s = result.fit_s / fits if fits else 0.0
    return result


def score(
    values: FloatArray,
    forecasts: FloatArray,
    *,
    horizon_steps: int,
    warmup_steps: int,
    quantile: float,
) -> tuple[float, float, float, float]:
    """MAE, MAPE, pinball loss and coverage over the origins from ``warmup_steps`` on."""
    origins = _origins(values, horizon_steps, warmup_steps)
    actual, predicted = values[origins + horizon_steps], forecasts[origins]
    if np.isnan(predicted).any():
        raise ValueError("a forecaster gave no forecast at a scored origin: lengthen the warmup")
    error = actual - predicted
    positive = actual > 0
    relative = np.abs(error[positive]) / actual[positive]
    mape = float(np.mean(relative)) if len(relative) else math.nan
    coverage = float(np.mean(error <= 0))
    return float(np.mean(np.abs(error))), mape, float(np.mean(pinball(error, quantile))), coverage


def backtest(
    values: FloatArray,
    *,
    step_s: float,
    horizon_steps: int,
    quantile: float,
    warmup_steps: int,
    models: Sequence[ForecastModel] = MODELS,
    factory: Callable[[ForecastModel], AnyForecaster | None] | None = None,
) -> list[Score]:
    """Score each of ``models``, built as a policy would build them (or by ``factory``).
    Raises ValueError when the series leaves no origin to score after the warmup."""
    origins = len(_origins(values, horizon_steps, warmup_steps))
    if not origins:
        raise ValueError(f"{len(values)} steps leave nothing to score after a warmup of "
                         f"{warmup_steps} and a horizon of {horizon_steps} steps")  # fmt: skip
    make = factory or (lambda m: forecaster_for(m, quantile=quantile, step_s=step_s))
    scores = []
    for model in models:
        forecaster = make(model)
        if forecaster is None:
            continue
        run = replay(forecaster, values, step_s=step_s, horizon_steps=horizon_steps)
        mae, mape, loss, coverage = score(values, run.forecasts, horizon_steps=horizon_steps,
                                warmup_steps=warmup_steps, quantile=quantile)  # fmt: skip
        scored = run.fallbacks[warmup_steps : warmup_steps + origins]
        fallbacks = Counter(reason for reason in scored if reason is not None)
        scores.append(Score(model.value, mae, mape, loss, origins, coverage, fallbacks,
                            run.fit_s * 1000))  # fmt: skip
    return scores


def _origins(values: FloatArray, horizon_steps: int, warmup_steps: int) -> NDArray[np.int64]:
    return np.arange(warmup_steps, len(values) - horizon_steps)


def format_table(scores: Sequence[Score], quantile: float) -> str:
    """One row per model; each error also as a ratio to the last value's (below 1: better)."""
    base = next((s for s in scores if s.model == ForecastModel.LAST_VALUE.value), None)

    def ratio(value: float, baseline: float | None) -> str:
        return "" if not baseline else f"({value / baseline:.2f})"

    head = f"pinball@{quantile:g}"
    lines = [f"{'model':<14}{'MAE':>14}{'MAPE':>16}{head:>20}{'covered':>9}{'fit ms':>8}"
             "  fallbacks"]  # fmt: skip
    for s in scores:
        fallbacks = ", ".join(f"{k} {v}" for k, v in sorted(s.fallbacks.items())) or "-"
        lines.append(
            f"{s.model:<14}"
            f"{s.mae:>8.3f} {ratio(s.mae, base.mae if base else None):>6}"
            f"{s.mape:>9.1%} {ratio(s.mape, base.mape if base else None):>6}"
            f"{s.pinball:>13.3f} {ratio(s.pinball, base.pinball if base else None):>6}"
            f"{s.coverage:>9.0%}{s.fit_ms:>8.1f}  {fallbacks}"
        )
    return "\n".join(lines)

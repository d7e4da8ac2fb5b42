"""The online forecaster: a model per series behind the Forecaster protocol, fitted off
the tick, falling back to the last value (counted and audited) whenever it cannot
forecast."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import pytest

from pdscaler.domain.policy import ForecastModel, Role
from pdscaler.domain.signals import PoolKey, SignalName
from pdscaler.forecast.auto import AutoForecaster
from pdscaler.forecast.baselines import LastValue, MovingAverage
from pdscaler.forecast.models import Holt, QuantileGbr, RidgeLags
from pdscaler.forecast.online import FallbackReason, OnlineForecaster
from pdscaler.forecast.registry import forecaster_for
from pdscaler.forecast.series import ShortHistory

T0 = datetime(2025, 3, 1, 12, tzinfo=UTC)
STEP_S = 5.0
HORIZON_S = 65.0
KEY = (PoolKey("ns", "chat", Role.PREFILL), SignalName.ARRIVAL_RATE)
OTHER = (PoolKey("ns", "chat", Role.DECODE), SignalName.OUTPUT_TOKEN_RATE)


@dataclass
class Log:
    fits: int = 0
    predicts: int = 0
    horizons: list[int] = field(default_factory=list)


class FakeModel:
    """Forecasts a fixed number; can be told to fail."""

    def __init__(
        self, log: Log, forecast: float = 42.0, fit_error: Exception | None = None,
        predict_error: Exception | None = None,
    ) -> None:  # fmt: skip
        self.log, self.forecast = log, forecast
        self.fit_error, self.predict_error = fit_error, predict_error

    def fit(self, times: Any, values: Any, horizon_steps: int = 1) -> Self:
        self.log.fits += 1
        self.log.horizons.append(horizon_steps)
        if self.fit_error is not None:
            raise self.fit_error
        return self

    def predict(self, horizon_steps: int, times: Any = None, values: Any = None) -> float:
        self.log.predicts += 1
        if self.predict_error is not None:
            raise self.predict_error
        return self.forecast


def online(
    log: Log, min_history_s: float = 60.0, **model: Any
) -> tuple[OnlineForecaster, Callable[..., None]]:
    forecaster = OnlineForecaster(
        lambda: FakeModel(log, **model), name="fake", min_history_s=min_history_s,
        refit_every_s=60.0, step_s=STEP_S, quantile=0.9,
    )  # fmt: skip

    def feed(steps: int, value: float = 10.0, start: int = 0) -> None:
        for i in range(start, start + steps):
            forecaster.update(KEY, at(i), value)

    return forecaster, feed


def at(step: int) -> datetime:
    return T0 + timedelta(seconds=step * STEP_S)


# -- falling back ----------------------------------------------------------------------


def test_no_history_gives_no_forecast_and_counts_a_fallback() -> None:
    forecaster, _ = online(Log())

    assert forecaster.predict(KEY, T0, HORIZON_S) is None
    assert forecaster.fallbacks == {FallbackReason.NO_HISTORY: 1}
    assert forecaster.describe(KEY)["fallback"] == "noHistory"


def test_nan_and_inf_only_is_no_history_and_the_dropped_values_are_audited() -> None:
    forecaster, _ = online(Log())
    for i, value in enumerate([math.nan, math.inf, -math.inf, -1.0]):
        forecaster.update(KEY, at(i), value)

    assert forecaster.predict(KEY, at(3), HORIZON_S) is None
    assert forecaster.fallbacks == {FallbackReason.NO_HISTORY: 1}
    assert forecaster.describe(KEY)["dropped"] == 4


def test_short_history_falls_back_to_the_last_value_and_is_not_fitted() -> None:
    log = Log()
    forecaster, feed = online(log, min_history_s=60.0)
    feed(11, value=7.0)  # 55 s

    assert forecaster.predict(KEY, at(10), HORIZON_S) == 7.0
    assert forecaster.refit_due(at(10)) == []
    assert forecaster.fallbacks == {FallbackReason.SHORT_HISTORY: 1}
    assert log.fits == 0


def test_enough_history_waits_for_a_fit_then_forecasts_with_the_model() -> None:
    log = Log()
    forecaster, feed = online(log, min_history_s=60.0)
    feed(12, value=7.0)  # 60 s

    before_fit = forecaster.predict(KEY, at(11), HORIZON_S)
    due = forecaster.refit_due(at(11))
    fitted = forecaster.refit(at(11))
    after_fit = forecaster.predict(KEY, at(11), HORIZON_S)

    assert before_fit == 7.0
    assert (due, fitted, log.horizons) == ([KEY], 1, [13])
    assert after_fit == 42.0
    assert forecaster.fallbacks == {FallbackReason.NOT_FITTED: 1}
    assert forecaster.describe(KEY)["fallback"] is None


def test_a_fit_that_raises_falls_back_is_audited_and_is_retried_a_refit_period_later() -> None:
    log = Log()
    forecaster, feed = online(log, fit_error=RuntimeError("singular matrix"))
    feed(12)
    forecaster.predict(KEY, at(11), HORIZON_S)

    forecaster.refit(at(11))
    forecast = forecaster.predict(KEY, at(11), HORIZON_S)

    assert forecast == 10.0
    assert forecaster.fallbacks[FallbackReason.FIT_FAILED] == 1
    assert forecaster.describe(KEY)["fitError"] == "RuntimeError: singular matrix"
    assert forecaster.refit_due(at(22)) == []
    assert forecaster.refit_due(at(23)) == [KEY]


def test_a_fit_short_of_history_for_its_horizon_counts_as_short_history() -> None:
    forecaster, feed = online(Log(), fit_error=ShortHistory("needs 900 steps"))
    feed(12)
    forecaster.predict(KEY, at(11), 3600.0)
    forecaster.refit(at(11))

    assert forecaster.predict(KEY, at(11), 3600.0) == 10.0
    assert forecaster.fallbacks[FallbackReason.SHORT_HISTORY] == 1


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("raises", {"predict_error": ValueError("bad")}),
        ("answers NaN", {"forecast": math.nan}),
        ("answers Inf", {"forecast": math.inf}),
    ],
    ids=lambda c: c if isinstance(c, str) else "",
)
def test_a_model_that_cannot_forecast_falls_back(name: str, model: dict[str, Any]) -> None:
    forecaster, feed = online(Log(), **model)
    feed(12)
    forecaster.predict(KEY, at(11), HORIZON_S)
    forecaster.refit(at(11))

    assert forecaster.predict(KEY, at(11), HORIZON_S) == 10.0
    assert forecaster.fallbacks[FallbackReason.PREDICT_FAILED] == 1


def test_a_long_gap_starts_the_history_over() -> None:
    forecaster, feed = online(Log(), min_history_s=60.0)
    feed(12)
    feed(3, value=5.0, start=20)  # 40 s without a value: longer than the 30 s filled

    assert forecaster.predict(KEY, at(22), HORIZON_S) == 5.0
    assert forecaster.describe(KEY)["historyS"] == 15.0
    assert forecaster.fallbacks == {FallbackReason.SHORT_HISTORY: 1}


def test_a_short_gap_is_bridged() -> None:
    forecaster, feed = online(Log(), min_history_s=60.0)
    feed(6)
    feed(6, start=12)  # 30 s without a value: filled

    assert forecaster.describe(KEY)["historyS"] == 90.0


def test_a_forecast_below_zero_is_clamped() -> None:
    forecaster, feed = online(Log(), forecast=-3.0)
    feed(12)
    forecaster.predict(KEY, at(11), HORIZON_S)
    forecaster.refit(at(11))

    assert forecaster.predict(KEY, at(11), HORIZON_S) == 0.0


# -- fitting off the tick ----------------------------------------------------------------


def test_predict_never_fits() -> None:
    log = Log()
    forecaster, _ = online(log)
    for i in range(200):
        forecaster.update(KEY, at(i), 10.0)
        forecaster.predict(KEY, at(i), HORIZON_S)

    assert log.fits == 0
    assert forecaster.fallbacks[FallbackReason.NOT_FITTED] == 200 - 11  # from 60 s of history


def test_refits_come_due_every_refit_period_and_when_the_horizon_changes() -> None:
    log = Log()
    forecaster, feed = online(log)
    feed(40)
    forecaster.predict(KEY, at(11), HORIZON_S)
    forecaster.refit(at(11))

    assert forecaster.refit_due(at(22)) == []
    assert forecaster.refit_due(at(23)) == [KEY]  # 60 s later
    forecaster.predict(KEY, at(12), 125.0)  # a longer cold start
    assert forecaster.refit_due(at(12)) == [KEY]
    assert forecaster.predict(KEY, at(12), 125.0) == 10.0
    assert forecaster.fallbacks[FallbackReason.NOT_FITTED] == 3  # one before the first fit
    forecaster.refit(at(12))
    assert log.horizons == [13, 25]


def test_refit_stops_at_its_budget_and_leaves_the_rest_due() -> None:
    clock = iter(range(100))
    forecaster = OnlineForecaster(
        lambda: FakeModel(Log()), name="fake", min_history_s=0.0, timer=lambda: next(clock)
    )
    for key in (KEY, OTHER):
        forecaster.update(key, T0, 1.0)
        forecaster.predict(key, T0, HORIZON_S)

    # each fit takes one tick of the fake timer
    assert forecaster.refit(T0, budget_s=1.5) == 1
    assert len(forecaster.refit_due(T0)) == 1


def test_series_not_seen_within_the_history_kept_are_forgotten() -> None:
    forecaster = OnlineForecaster(
        lambda: FakeModel(Log()), name="fake", min_history_s=0.0, history_s=600.0
    )
    forecaster.update(KEY, T0, 1.0)
    forecaster.update(OTHER, T0 + timedelta(seconds=500), 1.0)

    forecaster.refit(T0 + timedelta(seconds=700))

    assert forecaster.describe(KEY)["historyS"] == 0.0  # forgotten
    assert forecaster.describe(OTHER)["historyS"] == 5.0


def test_the_history_kept_is_bounded() -> None:
    forecaster = OnlineForecaster(
        lambda: FakeModel(Log()), name="fake", min_history_s=0.0, history_s=60.0
    )
    for i in range(100):
        forecaster.update(KEY, at(i), 1.0)

    assert forecaster.describe(KEY)["historyS"] == 60.0


# -- audit -----------------------------------------------------------------------------


def test_describe_scores_recent_forecasts_against_what_came() -> None:
    forecaster, feed = online(Log(), forecast=12.0)
    feed(12, value=10.0)
    forecaster.predict(KEY, at(11), HORIZON_S)
    forecaster.refit(at(11))
    for i in range(11, 40):  # each forecast comes due 13 steps later, where 10 is seen
        forecaster.predict(KEY, at(i), HORIZON_S)
        forecaster.update(KEY, at(i + 1), 10.0)

    audit = forecaster.describe(KEY)

    # due by step 40: the last value 10 forecast before the fit, then 17 forecasts of 12
    assert audit["scored"] == 18
    assert audit["recentMae"] == pytest.approx(17 * 2.0 / 18)
    assert audit["recentPinball"] == pytest.approx(17 * 0.1 * 2.0 / 18)  # over by 2: 0.1 each
    assert audit["lastValueMae"] == 0.0
    assert audit["horizonS"] == 65.0
    assert audit["model"] == "fake"
    assert audit["fitError"] is None
    assert audit["fittedAt"] == at(11).isoformat()


# -- the forecaster a policy names -----------------------------------------------------


@pytest.mark.parametrize(
    ("model", "kind", "name", "estimator"),
    [
        (ForecastModel.NONE, type(None), None, None),
        (ForecastModel.LAST_VALUE, LastValue, None, None),
        (ForecastModel.MOVING_AVERAGE, MovingAverage, None, None),
        (ForecastModel.AUTO, AutoForecaster, None, None),  # see test_auto
        (ForecastModel.HOLT, OnlineForecaster, "holt", Holt),
        (ForecastModel.RIDGE, OnlineForecaster, "ridge", RidgeLags),
        (ForecastModel.QUANTILE_GBR, OnlineForecaster, "quantileGbr", QuantileGbr),
    ],
    ids=lambda c: c.value if isinstance(c, ForecastModel) else "",
)
def test_forecaster_for_each_model_a_policy_can_name(
    model: ForecastModel, kind: type, name: str | None, estimator: type | None
) -> None:
    forecaster = forecaster_for(model, quantile=0.95, step_s=10.0)

    assert isinstance(forecaster, kind)
    if isinstance(forecaster, OnlineForecaster):
        made = forecaster.model_factory()
        assert (forecaster.name, type(made)) == (name, estimator)
        assert made.get_params()["step_s"] == 10.0  # type: ignore[attr-defined]
        if estimator is QuantileGbr:
            assert made.get_params()["quantile"] == 0.95  # type: ignore[attr-defined]


def test_holt_from_the_registry_forecasts_a_steady_series_at_its_level() -> None:
    forecaster = forecaster_for(ForecastModel.HOLT, quantile=0.9, step_s=STEP_S)
    assert isinstance(forecaster, OnlineForecaster)
    for i in range(80):
        forecaster.update(KEY, at(i), 10.0 + (i % 2))  # 10, 11, 10, 11, ...
        forecaster.predict(KEY, at(i), HORIZON_S)
        forecaster.refit(at(i))

    assert forecaster.predict(KEY, at(79), HORIZON_S) == pytest.approx(10.5, abs=0.3)
    assert forecaster.describe(KEY)["fallback"] is None


@pytest.mark.parametrize(("upper", "most_above"), [(False, 0.7), (True, 0.15)])
def test_the_upper_forecast_covers_the_quantile_of_what_comes(
    upper: bool, most_above: float
) -> None:
    import numpy as np

    rng = np.random.default_rng(7)
    values = 100 + rng.normal(0, 10, size=720)  # an hour of a level load, with noise
    forecaster = forecaster_for(ForecastModel.HOLT, quantile=0.9, step_s=STEP_S, upper=upper)
    assert isinstance(forecaster, OnlineForecaster)
    horizon = round(HORIZON_S / STEP_S)
    made: dict[int, float] = {}
    for i, value in enumerate(values):
        forecaster.update(KEY, at(i), float(value))
        if i % 60 == 0:
            forecaster.refit(at(i))
        forecast = forecaster.predict(KEY, at(i), HORIZON_S)
        assert forecast is not None
        made[i + horizon] = forecast

    scored = [i for i in made if 360 <= i < len(values)]  # the second half: calibrated
    above = sum(values[i] > made[i] for i in scored) / len(scored)
    assert above <= most_above
    shift = forecaster.describe(KEY)["upperShift"]
    assert (shift > 5) is upper  # about the 0.9 quantile of N(0, 10): 12.8
    if not upper:
        assert above >= 0.3  # the point forecast is exceeded about half the time

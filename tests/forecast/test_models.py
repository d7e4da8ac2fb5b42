"""The forecasting models: scikit-learn's conventions, clamping, the cleaning rule, direct
forecasts, and forecasting from newer values without learning from them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.base import clone

from pdscaler.forecast.models import Holt, HorizonNotFitted, QuantileGbr, RidgeLags
from pdscaler.forecast.series import ShortHistory

STEP_S = 5.0
MODELS: list[tuple[type[Any], dict[str, Any]]] = [
    (Holt, {"alpha": 0.2, "beta": 0.05, "damping": 0.8, "step_s": 10.0}),
    (RidgeLags, {"lags": 3, "windows": (4, 8), "alpha": 0.5, "step_s": 10.0, "calendar": False}),
    (QuantileGbr, {"quantile": 0.8, "lags": 3, "windows": (4,), "max_iter": 5, "random_state": 7}),
]


def series(values: Any, start_s: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype=float)
    return start_s + np.arange(len(values)) * STEP_S, values


def poisson(mean: float, steps: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(mean, steps).astype(float)


@pytest.mark.parametrize(("model", "params"), MODELS, ids=lambda m: getattr(m, "__name__", ""))
def test_parameters_are_stored_unchanged_and_learning_happens_in_fit(
    model: type[Any], params: dict[str, Any]
) -> None:
    estimator = model(**params)

    assert {k: estimator.get_params()[k] for k in params} == params
    assert all(estimator.get_params()[k] is v for k, v in params.items())
    assert not [name for name in vars(estimator) if name.endswith("_")]
    copy = clone(estimator).set_params(step_s=STEP_S)
    assert copy.get_params()["step_s"] == STEP_S
    assert estimator.get_params()["step_s"] == params.get("step_s", STEP_S)
    assert copy.fit(*series(poisson(20, 200)), horizon_steps=3) is copy
    assert [name for name in vars(copy) if name.endswith("_")]


@pytest.mark.parametrize(
    "model",
    [Holt(step_s=STEP_S), RidgeLags(step_s=STEP_S), QuantileGbr(step_s=STEP_S)],
    ids=lambda m: type(m).__name__,
)
def test_a_forecast_below_zero_is_clamped_at_zero(model: Any) -> None:
    # a load falling by 0.5 per step, 1.0 at the end: 13 steps on it would be -5.5
    falling = np.linspace(100.5, 1.0, 200)

    model.fit(*series(falling), horizon_steps=13)

    assert model.predict(13) == 0.0


@pytest.mark.parametrize("model", [RidgeLags(), QuantileGbr()], ids=lambda m: type(m).__name__)
def test_a_direct_model_forecasts_only_the_horizon_it_was_fitted_for(model: Any) -> None:
    model.fit(*series(poisson(20, 200)), horizon_steps=13)

    assert model.predict(13) > 0
    with pytest.raises(HorizonNotFitted, match="fitted for 13 steps ahead, asked for 14"):
        model.predict(14)


@pytest.mark.parametrize(
    ("model", "steps"),
    [(Holt(), 1), (RidgeLags(), 60 + 13 + 28), (QuantileGbr(), 60 + 13 + 28)],
    ids=["Holt", "RidgeLags", "QuantileGbr"],
)
def test_too_little_history_raises_short_history(model: Any, steps: int) -> None:
    with pytest.raises(ShortHistory):
        model.fit(*series(poisson(20, steps)), horizon_steps=13)


@pytest.mark.parametrize(
    "model", [Holt(), RidgeLags(), QuantileGbr()], ids=lambda m: type(m).__name__
)
def test_fit_cleans_nan_and_inf_by_the_written_rule(model: Any) -> None:
    values = poisson(20, 300)
    broken = values.copy()
    broken[[50, 120, 121, 250]] = [np.nan, np.inf, -np.inf, np.nan]
    filled = values.copy()
    filled[[50, 120, 121, 250]] = values[[49, 119, 119, 249]]  # the last good value

    from_broken = clone(model).fit(*series(broken), horizon_steps=13).predict(13)
    from_filled = clone(model).fit(*series(filled), horizon_steps=13).predict(13)

    assert from_broken == from_filled


def test_holt_forecasts_from_newer_values_as_if_it_had_smoothed_them_without_learning() -> None:
    values = poisson(20, 300) + np.linspace(0, 30, 300)
    times, _ = series(values)
    model = Holt(alpha=0.2, beta=0.05).fit(times[:200], values[:200], horizon_steps=13)
    learned = (model.level_, model.trend_, model.end_)

    later = model.predict(13, times, values)

    refitted = Holt(alpha=0.2, beta=0.05).fit(times, values, horizon_steps=13)
    assert later == pytest.approx(refitted.predict(13))
    assert (model.level_, model.trend_, model.end_) == learned


def test_holt_refuses_newer_values_cut_from_the_fit_by_a_long_gap() -> None:
    times, values = series(poisson(20, 100))
    model = Holt().fit(times, values, horizon_steps=13)
    after_gap = times[-1] + 120 + np.arange(10) * STEP_S

    with pytest.raises(ShortHistory, match="cut by a gap"):
        model.predict(13, after_gap, np.full(10, 20.0))


def test_a_regression_forecasts_from_the_newest_values_given() -> None:
    # the load steps between 20 and 40 every 100 steps: the level persists
    levels = np.repeat([20.0, 40.0, 20.0, 40.0, 20.0], 100)
    times, values = series(levels + poisson(0.5, 500))
    model = RidgeLags().fit(times[:400], values[:400], horizon_steps=13)
    coef = model.regressor_.coef_.copy()

    at_fit = model.predict(13)
    from_tail = model.predict(13, times[:400], values[:400])
    after_step = model.predict(13, times[:450], values[:450])

    assert from_tail == at_fit
    assert at_fit > 34
    assert after_step < 26  # it read the step down, after the fit
    np.testing.assert_array_equal(model.regressor_.coef_, coef)


@pytest.mark.parametrize(
    ("name", "values", "alphas"),
    [
        ("noise around a level: a long memory", poisson(20, 400), {0.03, 0.1}),
        (
            "a random walk: a short memory",
            200 + np.cumsum(np.random.default_rng(1).normal(0, 1, 400)),
            {0.3, 1.0},
        ),
    ],
    ids=lambda c: c if isinstance(c, str) else "",
)
def test_holt_chooses_alpha_by_the_series_noise(name: str, values: Any, alphas: set[float]) -> None:
    model = Holt().fit(*series(values), horizon_steps=13)

    assert model.alpha_ in alphas


def test_the_quantile_model_forecasts_the_upper_quantile_the_ridge_the_mean() -> None:
    values = poisson(20, 600, seed=3)  # Poisson(20): mean 20, 0.9 quantile 26
    times, _ = series(values)

    upper = QuantileGbr(quantile=0.9, calendar=False).fit(times, values, 13).predict(13)
    median = QuantileGbr(quantile=0.5, calendar=False).fit(times, values, 13).predict(13)
    mean = RidgeLags(calendar=False).fit(times, values, 13).predict(13)

    assert 24 <= upper <= 28
    assert 18 <= median <= 22
    assert 18 <= mean <= 22


def test_fitting_is_deterministic() -> None:
    times, values = series(poisson(20, 400))

    first = QuantileGbr().fit(times, values, 13).predict(13)
    second = QuantileGbr().fit(times, values, 13).predict(13)

    assert first == second

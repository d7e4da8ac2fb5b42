"""``model: auto``: a model chosen per series by a rolling-origin backtest on its own
history, scored by the GPU-hours the forecasts would provision and the share of steps
they would serve; Holt until then; the choice and its reasons in the audit."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Self

import numpy as np
import pytest

from pdscaler.domain.policy import ForecastModel, Role
from pdscaler.domain.signals import PoolKey, SignalName
from pdscaler.forecast.auto import (
    AutoForecaster,
    Candidate,
    Trial,
    default_capacity,
    explain,
    rank,
    replay_capacity,
    rolling_forecasts,
)
from pdscaler.forecast.backtest import KEY, START, arrival_rate, replay
from pdscaler.forecast.models import Holt, QuantileGbr, RidgeLags
from pdscaler.forecast.online import OnlineForecaster
from pdscaler.forecast.registry import candidates, forecaster_for
from pdscaler.sim.traces import load_trace

# The repository and shared/ are siblings (CI copies shared/ beside the clone).
TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "traces"
AZURE = TRACES / "AzureLLMInferenceTrace_conv.csv"
STEP_S, HORIZON_S, HORIZON_STEPS, QUANTILE = 5.0, 65.0, 13, 0.9
OTHER = (PoolKey("ns", "chat", Role.DECODE), SignalName.OUTPUT_TOKEN_RATE)


def at(step: int) -> datetime:
    return START + timedelta(seconds=step * STEP_S)


def feed(forecaster: AutoForecaster, values: np.ndarray, *, refit: bool = True) -> None:
    """As the loop would: a value, a forecast, and (off the tick) the refits due."""
    for i, value in enumerate(values.tolist()):
        forecaster.update(KEY, at(i), value)
        forecaster.predict(KEY, at(i), HORIZON_S)
        if refit:
            forecaster.refit(at(i))


def auto(made: list[Candidate] | None = None, **options: Any) -> AutoForecaster:
    made = made or candidates(quantile=QUANTILE, step_s=STEP_S)
    return AutoForecaster(made, step_s=STEP_S, quantile=QUANTILE, **options)


@dataclass
class Log:
    fits: int = 0


class ConstantModel:
    """Forecasts a fixed number; counts its fits; can be told to fail them."""

    def __init__(self, log: Log, forecast: float, fit_error: Exception | None = None) -> None:
        self.log, self.forecast, self.fit_error = log, forecast, fit_error

    def fit(self, times: Any, values: Any, horizon_steps: int = 1) -> Self:
        self.log.fits += 1
        if self.fit_error is not None:
            raise self.fit_error
        return self

    def predict(self, horizon_steps: int, times: Any = None, values: Any = None) -> float:
        return self.forecast


def constant(name: str, log: Log, forecast: float, **kw: Any) -> Candidate:
    return Candidate(name, lambda: ConstantModel(log, forecast, **kw), refit_every_s=60.0)


# -- the score: the fluid replay ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "gpu_hours", "attainment"),
    [
        # values 2 4 6 2 8, c = 2: needed 1 2 3 1 4; forecasts 5 2 1 9 for steps 1..4 give
        # 3 1 1 5 replicas, the reactive path the step's own need 1 2 3 1, so provisioned
        # max(3,1)=3 >= 2, max(1,2)=2 < 3, max(1,3)=3 >= 1, max(5,1)=5 >= 4
        ("hourly steps", {}, 3 + 2 + 3 + 5, 3 / 4),
        ("two GPUs a replica", {"gpus_per_replica": 2}, 2 * 13, 3 / 4),
        ("5 s steps", {"step_s": 5.0}, 13 * 5 / 3600, 3 / 4),
        ("from the third origin", {"first_origin": 2}, 3 + 5, 1.0),
    ],
    ids=lambda c: c if isinstance(c, str) else "",
)
def test_the_fluid_replay_by_hand(
    name: str, options: dict[str, Any], gpu_hours: float, attainment: float
) -> None:
    values = np.array([2.0, 4.0, 6.0, 2.0, 8.0])
    forecasts = np.array([5.0, 2.0, 1.0, 9.0, math.nan])  # made at steps 0..3 for 1..4
    replay_options = {"step_s": 3600.0, **options}

    result = replay_capacity(values, forecasts, horizon_steps=1, capacity_per_replica=2.0,
                             **replay_options)  # fmt: skip

    assert result == pytest.approx((gpu_hours, attainment))


def test_the_fluid_replay_counts_a_whole_load_as_whole_replicas() -> None:
    # 0.3 / 0.1 is 2.9999999999999996 and 0.7 / 0.1 is 6.999999999999999 in floats
    values = np.array([0.3, 0.7])

    gpu_hours, attainment = replay_capacity(
        values, np.array([0.7, 0.0]), horizon_steps=1, capacity_per_replica=0.1, step_s=3600.0
    )

    assert (gpu_hours, attainment) == (7.0, 1.0)


def test_the_default_capacity_puts_the_90th_percentile_at_8_replicas() -> None:
    assert default_capacity(np.arange(1.0, 11.0)) == pytest.approx(9.1 / 8)
    assert default_capacity(np.r_[np.zeros(95), 16.0 * np.ones(5)]) == 2.0  # p90 zero: the max
    assert default_capacity(np.zeros(10)) == 1.0


# -- the rank --------------------------------------------------------------------------


def trial(gpu_hours: float, attainment: float, pinball: float = 1.0) -> Trial:
    return Trial(gpu_hours, attainment, pinball, mae=1.0)


@pytest.mark.parametrize(
    ("name", "trials", "ranked", "why"),
    [
        (
            "the target met: fewest GPU-hours among those that met it",
            {
                "holt": trial(0.47, 0.981),
                "ridge": trial(0.41, 0.992),
                "lean": trial(0.30, 0.85),
                "fat": trial(0.90, 1.0),
            },
            ["ridge", "holt", "fat", "lean"],
            "ridge: 0.41 GPU-h at 99.2% of steps served, the fewest GPU-h of the 3 that "
            "served >= 90% of steps; vs holt 0.47 GPU-h at 98.1%, fat 0.9 GPU-h at 100.0%, "
            "lean 0.3 GPU-h at 85.0%",
        ),
        (
            "one met it",
            {"holt": trial(0.47, 0.89), "quantileGbr": trial(0.52, 0.93)},
            ["quantileGbr", "holt"],
            "quantileGbr: 0.52 GPU-h at 93.0% of steps served, the only one that served "
            ">= 90% of steps; vs holt 0.47 GPU-h at 89.0%",
        ),
        (
            "none met it: the highest attainment, then the fewest GPU-hours",
            {"holt": trial(0.47, 0.80), "ridge": trial(0.50, 0.85), "gbr": trial(0.45, 0.85)},
            ["gbr", "ridge", "holt"],
            "gbr: 0.45 GPU-h at 85.0% of steps served, the most steps served; none served "
            "90%; vs ridge 0.5 GPU-h at 85.0%, holt 0.47 GPU-h at 80.0%",
        ),
        (
            "a tie: the lower pinball loss, then the order given",
            {"a": trial(0.4, 0.95, 2.0), "b": trial(0.4, 0.95, 1.0), "c": trial(0.4, 0.95, 1.0)},
            ["b", "c", "a"],
            None,
        ),
    ],
    ids=lambda c: c if isinstance(c, str) else "",
)
def test_the_rank(name: str, trials: dict[str, Trial], ranked: list[str], why: str | None) -> None:
    assert rank(trials, QUANTILE) == ranked
    if why is not None:
        assert explain(ranked, trials, QUANTILE) == why


# -- the backtest ----------------------------------------------------------------------


def periodic(steps: int, seed: int = 0) -> np.ndarray:
    """A load with a 20-minute cycle (a day, compressed) and noise."""
    rng = np.random.default_rng(seed)
    i = np.arange(steps)
    return 10 + 6 * np.sin(2 * np.pi * i / 240) + rng.normal(0, 0.5, steps)


@pytest.mark.parametrize("model", [Holt, RidgeLags, QuantileGbr], ids=lambda m: m.__name__)
def test_a_models_path_is_its_forecast_at_each_step_in_one_pass(model: type) -> None:
    values = periodic(400)
    times = START.timestamp() + STEP_S * np.arange(400)
    fitted = model(step_s=STEP_S).fit(times[:250], values[:250], HORIZON_STEPS)

    path = fitted.predict_path(HORIZON_STEPS, times, values)

    assert np.isnan(path[:249]).all()  # before the fit's last step
    one_by_one = [fitted.predict(HORIZON_STEPS, times[: i + 1], values[: i + 1])
                  for i in range(249, 400, 15)]  # fmt: skip
    assert path[249::15] == pytest.approx(one_by_one)


def test_rolling_forecasts_refit_on_the_values_up_to_each_refit_origin_only() -> None:
    seen: list[int] = []

    class Recorder(ConstantModel):
        def fit(self, times: Any, values: Any, horizon_steps: int = 1) -> Self:
            seen.append(len(values))
            return self

        def predict(self, horizon_steps: int, times: Any = None, values: Any = None) -> float:
            return float(values[-1])  # the value at the origin: no peeking ahead

    values = np.arange(20.0)
    times = np.arange(20.0) * STEP_S
    made = Candidate("recorder", lambda: Recorder(Log(), 0.0))

    forecasts, fallbacks, error = rolling_forecasts(
        made, times, values, step_s=STEP_S, horizon_steps=3, first_origin=5, refit_every_steps=4
    )

    assert seen == [6, 10, 14]  # fitted at origins 5, 9 and 13, on the values up to each
    assert forecasts[5:17].tolist() == values[5:17].tolist()
    assert np.isnan(forecasts[:5]).all()
    assert np.isnan(forecasts[17:]).all()
    assert (fallbacks, error) == (0, None)


def test_rolling_forecasts_fall_back_to_the_last_value_where_a_fit_fails() -> None:
    values = np.arange(20.0)
    made = Candidate("broken", lambda: ConstantModel(Log(), 1.0, RuntimeError("singular")))

    forecasts, fallbacks, error = rolling_forecasts(
        made, values * STEP_S, values, step_s=STEP_S, horizon_steps=3, first_origin=5,
        refit_every_steps=4,
    )  # fmt: skip

    assert forecasts[5:17].tolist() == values[5:17].tolist()
    assert (fallbacks, error) == (12, "RuntimeError: singular")


# -- choosing per series ---------------------------------------------------------------


def test_with_too_little_history_it_stays_on_holt_and_says_why() -> None:
    forecaster = auto()

    feed(forecaster, periodic(360))  # 30 minutes

    audit = forecaster.describe(KEY)
    assert audit["model"] == "holt"
    assert audit["chosenBy"] == "auto"
    # looked at first with one value kept: an hour of values is kept 719 steps later
    assert audit["why"] == (
        "not enough history to choose: 60 min of clean history needed, "
        f"kept by {at(719).isoformat()} at the earliest"
    )
    assert (audit["choiceAt"], audit["candidates"]) == (None, {})
    assert audit["fallback"] is None  # Holt forecasts meanwhile, fitted


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("a 20-minute cycle", periodic(780)),
        ("a trend", 5 + 0.01 * np.arange(780) + np.random.default_rng(1).normal(0, 0.3, 780)),
    ],
    ids=lambda c: c if isinstance(c, str) else "",
)
def test_on_a_cycle_or_a_trend_auto_chooses_a_model_over_the_baseline_and_says_why(
    name: str, values: np.ndarray
) -> None:
    forecaster = auto()

    feed(forecaster, values)

    audit = forecaster.describe(KEY)
    scores = audit["candidates"]
    assert set(scores) == {"holt", "ridge", "quantileGbr", "movingAverage"}
    assert audit["model"] not in ("movingAverage", None)
    assert audit["why"].startswith(f"{audit['model']}: ")
    assert "movingAverage" in audit["why"]
    assert scores[audit["model"]]["attainment"] >= QUANTILE
    # the baseline lags a cycle or a trend by half its window: it serves too few steps
    assert scores["movingAverage"]["attainment"] < QUANTILE
    assert audit["choiceAt"] == at(719).isoformat()  # the first refit with an hour kept
    assert audit["fallback"] is None  # the chosen model was fitted before it served
    assert audit["params"]["learned"]  # and its fit is in the audit


def test_the_chosen_model_serves_and_a_choice_is_made_per_series() -> None:
    log = Log()
    generous = constant("generous", log, 50.0)  # always enough, and too much
    close = constant("close", log, 21.0)  # one replica above the peak
    forecaster = auto([constant("holt", log, 0.0), generous, close],
                      capacity_per_replica=lambda key: 1.0 if key == KEY else None)  # fmt: skip
    values = 10 + 10 * (np.arange(721) % 2)  # 10, 20, 10, ...: the reactive path is late
    for i, value in enumerate(values.tolist()):
        for key, scale in ((KEY, 1.0), (OTHER, 100.0)):
            forecaster.update(key, at(i), scale * value)
            forecaster.predict(key, at(i), HORIZON_S)
    before = forecaster.predict(KEY, at(720), HORIZON_S)

    forecaster.refit(at(720))

    assert before == 10.0  # the last value: the first candidate was not fitted yet
    # 21 replicas: enough at every step (the reactive path alone serves half the steps)
    assert forecaster.predict(KEY, at(720), HORIZON_S) == 21.0
    assert forecaster.describe(KEY)["capacityPerReplica"] == 1.0
    # a series whose capacity the caller does not know: 2000 / 8 a replica, at which
    # every forecast is one replica, the reactive path decides, and all serve half the
    # steps for the same GPU-hours: the tie goes to the lowest pinball loss
    assert forecaster.predict(OTHER, at(720), HORIZON_S) == 50.0
    assert forecaster.describe(OTHER)["capacityPerReplica"] == 250.0


def test_the_baseline_can_be_chosen_and_serves_its_moving_average() -> None:
    log = Log()
    short = constant("short", log, 0.0)  # the reactive path alone: a tie on capacity
    forecaster = auto([short, Candidate("movingAverage")], capacity_per_replica=1.0)
    feed(forecaster, 10 * np.ones(721))

    audit = forecaster.describe(KEY)

    assert audit["model"] == "movingAverage"  # the tie goes to the lower pinball loss
    assert forecaster.predict(KEY, at(720), HORIZON_S) == 10.0
    assert audit["params"] == {"windowS": 300.0}
    assert audit["fittedAt"] == audit["choiceAt"]


def test_predict_never_fits_a_candidate_only_refit_does() -> None:
    log = Log()
    broken = constant("broken", log, 0.0, fit_error=RuntimeError("blocked"))
    forecaster = auto([constant("holt", log, 12.0), broken], capacity_per_replica=1.0)

    feed(forecaster, 10 * np.ones(800), refit=False)

    assert log.fits == 0
    assert forecaster.predict(KEY, at(799), HORIZON_S) == 10.0  # holt, not fitted: last value
    forecaster.refit(at(799))
    assert log.fits > 0
    audit = forecaster.describe(KEY)
    # the last value would have served at fewer GPU-hours: chosen, but it cannot be fitted
    assert audit["model"] == "holt"
    assert audit["why"].startswith("broken: ")
    assert audit["why"].endswith("; but broken could not be fitted (RuntimeError: blocked): "
                                 "holt serves")  # fmt: skip
    assert audit["candidates"]["broken"]["error"] == "RuntimeError: blocked"
    assert audit["candidates"]["broken"]["fallbacks"] == 720 - 240 - HORIZON_STEPS
    forecaster.update(KEY, at(800), 10.0)  # holt still keeps the history
    assert forecaster.describe(KEY)["historyS"] == audit["historyS"] + STEP_S


def test_a_choice_is_made_again_every_period_and_at_a_new_horizon() -> None:
    forecaster = auto([constant("holt", Log(), 12.0), Candidate("movingAverage")])
    feed(forecaster, 10 * np.ones(721))
    assert forecaster.describe(KEY)["model"] == "movingAverage"  # nothing to fit: only choices
    assert forecaster.describe(KEY)["choiceAt"] == at(719).isoformat()

    assert forecaster.refit_due(at(719 + 179)) == []
    assert forecaster.refit_due(at(719 + 180)) == [KEY]  # 15 minutes on
    forecaster.predict(KEY, at(721), 125.0)  # a longer cold start
    assert KEY in forecaster.refit_due(at(721))


# -- the audit -------------------------------------------------------------------------


def test_describe_is_json_ready_before_and_after_a_choice() -> None:
    forecaster = auto()
    before = json.loads(json.dumps(forecaster.describe(KEY)))

    feed(forecaster, periodic(721))
    after = json.loads(json.dumps(forecaster.describe(KEY)))

    assert before["model"] == "holt"
    assert before["params"]["damping"] == 0.9
    assert set(after) >= {"model", "chosenBy", "why", "candidates", "choiceAt", "params",
                          "fallback", "fittedAt", "capacityPerReplica"}  # fmt: skip
    for score in after["candidates"].values():
        assert set(score) >= {"gpuHours", "attainment", "pinball", "mae"}


@pytest.mark.parametrize(
    ("model", "learned"),
    [
        (ForecastModel.HOLT, {"alpha", "beta", "level", "trend"}),
        (ForecastModel.RIDGE, {"horizonSteps", "scale", "features", "coefficients", "intercept"}),
        (ForecastModel.QUANTILE_GBR, {"horizonSteps", "scale", "features", "iterations"}),
    ],
    ids=lambda c: c.value if isinstance(c, ForecastModel) else "",
)
def test_every_fitted_model_states_its_parameters(model: ForecastModel, learned: set[str]) -> None:
    forecaster = forecaster_for(model, quantile=QUANTILE, step_s=STEP_S)
    assert isinstance(forecaster, OnlineForecaster)
    unfitted = forecaster.describe(KEY)["params"]
    for i, value in enumerate(periodic(240).tolist()):
        forecaster.update(KEY, at(i), value)
    forecaster.predict(KEY, at(239), HORIZON_S)
    forecaster.refit(at(239))

    params = json.loads(json.dumps(forecaster.describe(KEY)))["params"]

    assert "learned" not in unfitted
    assert params["step_s"] == STEP_S
    assert set(params["learned"]) == learned


# -- a real trace ----------------------------------------------------------------------


def test_on_the_azure_trace_auto_serves_the_quantile_model() -> None:
    """The trace's arrival rate drifts from 3 to 8 requests/s over its 58 minutes, and its
    5 s counts swing with Poisson noise: every point forecast aims at the middle of the
    next value and, with the reactive path one horizon late, leaves about a quarter of the
    steps short. The quantile model aims at the 0.9 quantile: the most steps served (89%),
    for about 14% more GPU-hours. (An hour is more than the trace holds: here auto
    chooses after 40 minutes, again 15 minutes later, each time scored from minute 20.)"""
    values = arrival_rate([r.arrival_s for r in load_trace(AZURE)], STEP_S)
    forecaster = auto(choose_after_s=2400.0)

    replay(forecaster, values, step_s=STEP_S, horizon_steps=HORIZON_STEPS)

    audit = forecaster.describe(KEY)
    scores: dict[str, dict[str, Any]] = audit["candidates"]
    assert audit["model"] == "quantileGbr"
    assert audit["choiceAt"] == at(479 + 180).isoformat()
    for name in ("holt", "ridge", "movingAverage"):
        assert scores[name]["attainment"] < 0.8 < scores["quantileGbr"]["attainment"]
        assert scores[name]["gpuHours"] < scores["quantileGbr"]["gpuHours"]
        assert scores["quantileGbr"]["gpuHours"] < 1.2 * scores[name]["gpuHours"]
        assert scores[name]["mae"] < scores["quantileGbr"]["mae"]  # a bound, not a middle


def test_the_registry_builds_auto_from_the_models_a_policy_can_name() -> None:
    forecaster = forecaster_for(ForecastModel.AUTO, quantile=0.95, step_s=10.0)
    made = candidates(quantile=0.95, step_s=10.0)

    assert isinstance(forecaster, AutoForecaster)
    assert [c.name for c in made] == ["holt", "ridge", "quantileGbr", "movingAverage"]
    assert [c.model_factory is None for c in made] == [False, False, False, True]
    quantile_model = made[2].model_factory
    assert quantile_model is not None
    assert quantile_model().get_params()["quantile"] == 0.95  # type: ignore[attr-defined]
    assert forecaster.describe(KEY)["model"] == "holt"


def test_series_not_seen_within_the_history_kept_are_forgotten() -> None:
    forecaster = auto(history_s=600.0, backtest_s=600.0, choose_after_s=600.0, warmup_s=300.0)
    forecaster.update(KEY, START, 1.0)
    forecaster.predict(KEY, START, HORIZON_S)
    forecaster.update(OTHER, START + timedelta(seconds=500), 1.0)

    forecaster.refit(START + timedelta(seconds=700))

    assert forecaster.describe(KEY)["historyS"] == 0.0
    assert forecaster.describe(OTHER)["historyS"] == 5.0
    assert forecaster.refit_due(START + timedelta(seconds=700)) == []

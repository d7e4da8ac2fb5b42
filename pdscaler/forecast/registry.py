"""The forecaster a policy's ``spec.forecast`` names."""

from __future__ import annotations

from functools import partial

from pdscaler.domain.policy import ForecastModel
from pdscaler.forecast.auto import AutoForecaster, Candidate
from pdscaler.forecast.baselines import LastValue, MovingAverage
from pdscaler.forecast.models import Holt, QuantileGbr, RidgeLags
from pdscaler.forecast.online import OnlineForecaster

# Each matches the controller's Forecaster protocol.
AnyForecaster = LastValue | MovingAverage | OnlineForecaster | AutoForecaster

# The history a model waits for before it forecasts. Holt smooths from its first values
# but its trend needs a few minutes; the regressions need rows beyond the 5-minute window
# their features read and the horizon their targets lie ahead.
HOLT_MIN_HISTORY_S = 300.0
REGRESSION_MIN_HISTORY_S = 900.0
# Holt and the ridge fit in a few milliseconds on two hours of 5 s steps, and follow the
# load better refitted every minute. The quantile model takes about 0.1 s, and an upper
# quantile moves slowly: refitting it every 5 minutes scored the same in the backtests.
REFIT_EVERY_S = 60.0
QUANTILE_REFIT_EVERY_S = 300.0


def candidates(*, quantile: float, step_s: float) -> list[Candidate]:
    """The models ``auto`` chooses from, as their own ``model`` would build them. Holt
    comes first: it serves until a choice is made (it needs the least history, and its
    fit costs next to nothing); the moving average is the baseline."""
    return [
        Candidate(ForecastModel.HOLT.value, partial(Holt, step_s=step_s),
                  HOLT_MIN_HISTORY_S, REFIT_EVERY_S),
        Candidate(ForecastModel.RIDGE.value, partial(RidgeLags, step_s=step_s),
                  REGRESSION_MIN_HISTORY_S, REFIT_EVERY_S),
        Candidate(ForecastModel.QUANTILE_GBR.value,
                  partial(QuantileGbr, quantile=quantile, step_s=step_s),
                  REGRESSION_MIN_HISTORY_S, QUANTILE_REFIT_EVERY_S),
        Candidate(ForecastModel.MOVING_AVERAGE.value),
    ]  # fmt: skip


def forecaster_for(
    model: ForecastModel, *, quantile: float, step_s: float, upper: bool = False
) -> AnyForecaster | None:
    """A new forecaster for ``model`` on series sampled every ``step_s`` seconds (the loop's
    interval); ``quantile`` is the upper quantile the policy names; ``upper``: the models
    forecast that quantile (the loop's use), not the point forecast (the backtest's). None
    for ``none``."""
    match model:
        case ForecastModel.NONE:
            return None
        case ForecastModel.LAST_VALUE:
            return LastValue()
        case ForecastModel.MOVING_AVERAGE:
            return MovingAverage()
        case ForecastModel.AUTO:
            return AutoForecaster(
                candidates(quantile=quantile, step_s=step_s),
                step_s=step_s,
                quantile=quantile,
                upper=upper,
            )
        case ForecastModel.HOLT | ForecastModel.RIDGE | ForecastModel.QUANTILE_GBR:
            made = {c.name: c for c in candidates(quantile=quantile, step_s=step_s)}
            candidate = made[model.value]
            assert candidate.model_factory is not None
            return OnlineForecaster(
                candidate.model_factory,
                name=candidate.name,
                min_history_s=candidate.min_history_s,
                refit_every_s=candidate.refit_every_s,
                step_s=step_s,
                quantile=quantile,
                upper=upper,
            )

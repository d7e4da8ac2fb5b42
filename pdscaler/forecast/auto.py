"""``model: auto``: a model chosen per series, by a rolling-origin backtest on that series'
own history, scored by the GPU-hours its forecasts would cost to hold the SLO.

The candidates (Holt, the ridge, the quantile model and the moving-average baseline, as
the registry names them) each sit behind their own forecaster. Per series, one of them
*serves*: ``predict`` is its ``predict``, so a tick costs what that model's forecast
costs, and **predict never fits**. Before a choice is made the first candidate (Holt)
serves. It also keeps the history: it is fed every value, the serving candidate too, and
the others nothing (a newly chosen one is first fed the history kept).

The choice is ``refit``'s job, off the tick, at most every ``choose_every_s`` per series
and only once ``choose_after_s`` of clean history is kept. Each candidate is replayed over
the last ``backtest_s`` of that history: refitted every ``backtest_refit_every_s`` from
``warmup_s`` on, forecasting at every step in between from the values up to it, at the
horizon the series is asked for. Each is then scored by the fluid replay of the capacity
its forecasts would provision (:func:`replay_capacity`) and ranked (:func:`rank`): among
those that served at least ``quantile`` of the steps, the fewest GPU-hours; if none did,
the most steps served. ``describe`` says which serves, why, and every candidate's score.

No I/O. The tick (``update``, ``predict``) and ``refit`` may run on different threads.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from pdscaler.domain.signals import SeriesKey
from pdscaler.forecast.baselines import MovingAverage
from pdscaler.forecast.online import FallbackReason, OnlineForecaster, SeriesModel
from pdscaler.forecast.series import FloatArray, clean, pinball

log = logging.getLogger(__name__)

# Without a capacity per replica from the caller, one replica serves an eighth of the
# series' 90th percentile: a pool of about eight at its busy moments, so that rounding up
# to whole replicas costs about what it costs a real pool.
REPLICAS_AT_P90 = 8
NOT_ENOUGH_HISTORY = "not enough history to choose"
_CEIL_TOLERANCE = 1e-9  # of a replica: float noise does not round a whole load up

CapacityPerReplica = float | Callable[[SeriesKey], float | None] | None


@dataclass(frozen=True)
class Candidate:
    """A model auto may choose: ``model_factory`` makes it unfitted, as the online
    forecaster takes it. None: the moving average over ``window_s`` (the baseline)."""

    name: str
    model_factory: Callable[[], SeriesModel] | None = None
    min_history_s: float = 0.0
    refit_every_s: float = 60.0
    window_s: float = 300.0


@dataclass(frozen=True)
class Trial:
    """One candidate's backtest on one series."""

    gpu_hours: float
    attainment: float  # the share of scored steps provisioned with at least what they needed
    pinball: float
    mae: float
    fallbacks: int = 0  # origins it could not forecast at: the last value stood in
    error: str | None = None  # the first reason it could not

    def audit(self) -> dict[str, Any]:
        return {"gpuHours": round(self.gpu_hours, 4), "attainment": round(self.attainment, 4),
                "pinball": round(self.pinball, 4), "mae": round(self.mae, 4),
                "fallbacks": self.fallbacks, "error": self.error}  # fmt: skip


# -- the score --------------------------------------------------------------------------


def replay_capacity(
    values: FloatArray,
    forecasts: FloatArray,
    *,
    horizon_steps: int,
    capacity_per_replica: float,
    step_s: float,
    first_origin: int = 0,
    gpus_per_replica: float = 1.0,
) -> tuple[float, float]:
    """The fluid replay: the GPU-hours and the attainment of the replicas ``forecasts``
    would have provisioned. ``forecasts[o]`` is the one made at step ``o`` for step
    ``o + horizon_steps``; each origin from ``first_origin`` on whose target is in
    ``values`` scores that target ``t``, with ``c`` the load one replica serves:

    - needed(t) = ceil(values[t] / c);
    - provisioned(t) = max(ceil(forecasts[o] / c), needed(o)): the reactive path catches
      up with the load one horizon late;
    - GPU-hours = sum of provisioned(t) * ``gpus_per_replica`` * ``step_s`` / 3600;
    - attainment = the share of targets with provisioned(t) >= needed(t).
    """
    origins = np.arange(first_origin, len(values) - horizon_steps)
    if not len(origins):
        raise ValueError("no origin whose target is in the series")
    if not capacity_per_replica > 0:
        raise ValueError(f"capacity_per_replica must be positive, got {capacity_per_replica}")
    reactive = _replicas(values[origins], capacity_per_replica)
    needed = _replicas(values[origins + horizon_steps], capacity_per_replica)
    provisioned = np.maximum(_replicas(forecasts[origins], capacity_per_replica), reactive)
    gpu_hours = float(provisioned.sum()) * gpus_per_replica * step_s / 3600
    return gpu_hours, float(np.mean(provisioned >= needed))


def _replicas(load: FloatArray, capacity_per_replica: float) -> FloatArray:
    if np.isnan(load).any():
        raise ValueError("a forecast is missing at a scored origin")
    return np.maximum(np.ceil(load / capacity_per_replica - _CEIL_TOLERANCE), 0.0)


def default_capacity(values: FloatArray) -> float:
    """The load one replica serves when the caller does not know it: the 90th percentile
    over ``REPLICAS_AT_P90`` (the maximum if that is zero; 1 for a series of zeros)."""
    top = float(np.percentile(values, 90)) if len(values) else 0.0
    if not top > 0:
        top = float(values.max()) if len(values) else 0.0
    return top / REPLICAS_AT_P90 if top > 0 else 1.0


def rank(trials: Mapping[str, Trial], target: float) -> list[str]:
    """The candidates, best first. Those whose attainment reaches ``target`` come first,
    by fewest GPU-hours; then the rest, by highest attainment, then fewest GPU-hours.
    Ties go to the lower pinball loss, then to the order given."""

    def key(name: str) -> tuple[int, float, float, float]:
        t = trials[name]
        if t.attainment >= target:
            return 0, t.gpu_hours, 0.0, t.pinball
        return 1, -t.attainment, t.gpu_hours, t.pinball

    return sorted(trials, key=key)


def explain(ranked: Sequence[str], trials: Mapping[str, Trial], target: float) -> str:
    """Why ``ranked[0]`` came first, with every other candidate's score beside it."""
    best, met = ranked[0], sum(trials[name].attainment >= target for name in ranked)
    if met > 1:
        reason = f"the fewest GPU-h of the {met} that served >= {target:.0%} of steps"
    elif met:
        reason = f"the only one that served >= {target:.0%} of steps"
    else:
        reason = f"the most steps served; none served {target:.0%}"
    head = f"{best}: {_brief(trials[best], ' of steps served')}, {reason}"
    rest = ", ".join(f"{name} {_brief(trials[name])}" for name in ranked[1:])
    return f"{head}; vs {rest}" if rest else head


def _brief(trial: Trial, served: str = "") -> str:
    text = f"{trial.gpu_hours:.3g} GPU-h at {trial.attainment:.1%}{served}"
    return f"{text} ({trial.fallbacks} fallbacks)" if trial.fallbacks else text


# -- the backtest -----------------------------------------------------------------------


def rolling_forecasts(
    candidate: Candidate,
    times: FloatArray,
    values: FloatArray,
    *,
    step_s: float,
    horizon_steps: int,
    first_origin: int,
    refit_every_steps: int,
) -> tuple[FloatArray, int, str | None]:
    """The forecasts ``candidate`` makes at each origin of a clean series, from
    ``first_origin`` to the last whose target is in it: a model is fitted on the values up
    to an origin every ``refit_every_steps``, and forecasts at each origin until the next
    fit from the values up to that origin. Where it cannot (its fit or forecast raised, or
    gave NaN) the last value stands in, as online. Returns the forecasts (NaN outside the
    origins), how many fell back, and the first reason."""
    end = len(values) - horizon_steps
    forecasts, error = np.full(len(values), np.nan), None
    if candidate.model_factory is None:
        window = max(1, round(candidate.window_s / step_s))
        sums, at = np.r_[0.0, np.cumsum(values)], np.arange(len(values))
        start = np.maximum(at - window + 1, 0)
        means = (sums[at + 1] - sums[start]) / (at - start + 1)
        forecasts[first_origin:end] = means[first_origin:end]
    else:
        for origin in range(first_origin, end, refit_every_steps):
            stop = min(origin + refit_every_steps, end)
            try:
                model = candidate.model_factory().fit(
                    times[: origin + 1], values[: origin + 1], horizon_steps
                )
                forecasts[origin:stop] = _path(model, horizon_steps, times[:stop], values[:stop],
                                               origin)  # fmt: skip
            except Exception as e:  # counted and audited as fallbacks, as online
                log.debug("%s: backtest fit at origin %d failed: %s", candidate.name, origin, e)
                error = error or f"{type(e).__name__}: {e}"
    scored = forecasts[first_origin:end]  # a view: filled in place
    missing = ~np.isfinite(scored)
    scored[missing] = values[first_origin:end][missing]
    return np.maximum(forecasts, 0.0), int(missing.sum()), error


def _path(
    model: SeriesModel, horizon_steps: int, times: FloatArray, values: FloatArray, origin: int
) -> FloatArray:
    """The model's forecasts at each step from ``origin`` on, each from the values up to it:
    in one pass where the model offers ``predict_path``, else one ``predict`` per step."""
    predict_path = getattr(model, "predict_path", None)
    if callable(predict_path):
        path = np.asarray(predict_path(horizon_steps, times, values), dtype=np.float64)
        if path.shape != values.shape:
            raise ValueError(f"a path of {path.shape} for a series of {values.shape}")
        return path[origin:]
    steps = range(origin, len(values))
    return np.array([model.predict(horizon_steps, times[: i + 1], values[: i + 1]) for i in steps],
                    dtype=np.float64)  # fmt: skip


def backtest_candidate(
    candidate: Candidate,
    times: FloatArray,
    values: FloatArray,
    *,
    step_s: float,
    horizon_steps: int,
    first_origin: int,
    refit_every_steps: int,
    quantile: float,
    capacity_per_replica: float,
    gpus_per_replica: float = 1.0,
) -> Trial:
    """``candidate``'s forecasts on a clean series (:func:`rolling_forecasts`), scored by
    the capacity they provision (:func:`replay_capacity`), the pinball loss at
    ``quantile`` and the mean absolute error."""
    forecasts, fallbacks, error = rolling_forecasts(
        candidate, times, values, step_s=step_s, horizon_steps=horizon_steps,
        first_origin=first_origin, refit_every_steps=refit_every_steps,
    )  # fmt: skip
    gpu_hours, attainment = replay_capacity(
        values, forecasts, horizon_steps=horizon_steps, capacity_per_replica=capacity_per_replica,
        step_s=step_s, first_origin=first_origin, gpus_per_replica=gpus_per_replica,
    )  # fmt: skip
    miss = (
        values[first_origin + horizon_steps :]
        - forecasts[first_origin : len(values) - horizon_steps]
    )
    return Trial(gpu_hours, attainment, float(pinball(miss, quantile).mean()),
                 float(np.abs(miss).mean()),
                 fallbacks, error)  # fmt: skip


# -- the forecaster ---------------------------------------------------------------------


@dataclass
class _Choice:
    """One series: who serves it, who is fed its values, and the last choice."""

    serving: str
    fed: tuple[str, ...]
    horizon_s: float | None = None  # the horizon last asked for
    seen_s: float = -math.inf  # the last update or predict
    next_s: float = -math.inf  # when a choice is due again
    why: str = NOT_ENOUGH_HISTORY
    trials: dict[str, Trial] = field(default_factory=dict)
    chosen_at_s: float | None = None
    chosen_horizon_s: float | None = None
    capacity_per_replica: float | None = None


class AutoForecaster:
    def __init__(
        self,
        candidates: Sequence[Candidate],
        *,
        step_s: float,
        quantile: float,
        capacity_per_replica: CapacityPerReplica = None,
        gpus_per_replica: float = 1.0,
        choose_every_s: float = 900.0,
        choose_after_s: float = 3600.0,
        backtest_s: float = 3600.0,
        warmup_s: float = 1200.0,
        backtest_refit_every_s: float = 900.0,
        history_s: float = 2 * 3600.0,
        timer: Callable[[], float] = time.perf_counter,
        upper: bool = False,
    ) -> None:
        """``upper``: the candidates forecast the upper ``quantile`` (see ``online``), not
        the point forecast. ``candidates``: the first (a model, not the baseline) serves
        until a choice is made and keeps each series' history. ``quantile`` is the share of
        steps a choice must serve, and the pinball loss's. ``capacity_per_replica``: the
        load one replica serves, for all series or per series (a callable; None, zero or
        NaN from it: not known); unknown, it is :func:`default_capacity` of the series.
        The backtest scores the last ``backtest_s`` of history, from ``warmup_s`` on."""
        names = [c.name for c in candidates]
        if not candidates or len(set(names)) != len(names) or candidates[0].model_factory is None:
            raise ValueError(f"candidates need distinct names and a model first: {names}")
        positive = min(step_s, choose_every_s, backtest_refit_every_s, gpus_per_replica)
        if not (positive > 0 and 0 <= warmup_s < min(backtest_s, choose_after_s)):
            raise ValueError("positive periods, and a warmup shorter than the history scored")
        self.name = "auto"
        self._candidates = {c.name: c for c in candidates}
        self._forecasters = {
            c.name: self._build(c, step_s, quantile, history_s, upper) for c in candidates
        }
        self._default = names[0]
        keeper = self._forecasters[self._default]
        assert isinstance(keeper, OnlineForecaster)
        self._keeper = keeper
        self._step_s, self._quantile = step_s, quantile
        self._capacity_per_replica = capacity_per_replica
        self._gpus_per_replica = gpus_per_replica
        self._choose_every_s, self._choose_after_s = choose_every_s, choose_after_s
        self._backtest_steps = max(1, round(backtest_s / step_s))
        self._warmup_steps = round(warmup_s / step_s)
        self._refit_every_steps = max(1, round(backtest_refit_every_s / step_s))
        self._history_s = history_s
        self._timer = timer
        self._choices: dict[SeriesKey, _Choice] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _build(
        candidate: Candidate, step_s: float, quantile: float, history_s: float, upper: bool
    ) -> OnlineForecaster | MovingAverage:
        if candidate.model_factory is None:
            return MovingAverage(timedelta(seconds=candidate.window_s))
        return OnlineForecaster(
            candidate.model_factory, name=candidate.name, min_history_s=candidate.min_history_s,
            refit_every_s=candidate.refit_every_s, step_s=step_s, quantile=quantile,
            history_s=history_s, upper=upper,
        )  # fmt: skip

    @property
    def fallbacks(self) -> Counter[FallbackReason]:
        """The serving models' fallbacks, all series (only a serving model is asked)."""
        total: Counter[FallbackReason] = Counter()
        for forecaster in self._online().values():
            total.update(forecaster.fallbacks)
        return total

    # -- the tick ----------------------------------------------------------------------

    def update(self, key: SeriesKey, at: datetime, value: float) -> None:
        with self._lock:  # held while feeding, so a new candidate's feed misses nothing
            choice = self._choice(key)
            choice.seen_s = max(choice.seen_s, at.timestamp())
            for name in choice.fed:
                self._forecasters[name].update(key, at, value)

    def seed(self, key: SeriesKey, points: Iterable[tuple[datetime, float]]) -> int:
        """Learn a stretch of the past, as each candidate fed the series learns it; values
        learned live stay. Returns how many the history keeper took."""
        past = list(points)
        with self._lock:
            choice = self._choice(key)
            if past:
                choice.seen_s = max(choice.seen_s, max(at for at, _ in past).timestamp())
            taken = [self._forecasters[name].seed(key, past) for name in choice.fed]
        return taken[0]  # the keeper is fed first

    def predict(self, key: SeriesKey, at: datetime, horizon_s: float) -> float | None:
        with self._lock:
            choice = self._choice(key)
            choice.seen_s = max(choice.seen_s, at.timestamp())
            choice.horizon_s = horizon_s
            serving = self._forecasters[choice.serving]
        return serving.predict(key, at, horizon_s)

    # -- fitting and choosing, off the tick ---------------------------------------------

    def refit_due(self, now: datetime) -> list[SeriesKey]:
        """The series whose serving model is due a fit, then those due a choice."""
        fits = [key for due in self._fits_due(now).values() for key in due]
        return list(dict.fromkeys(fits + self._choices_due(now.timestamp())))

    def refit(
        self, now: datetime, keys: Iterable[SeriesKey] | None = None, budget_s: float = math.inf
    ) -> int:
        """Fit the serving models that are due, then make the choices that are due, until
        ``budget_s`` seconds are spent (the rest stay due); with ``keys``, fit and choose
        for those series whether due or not. Returns the fits and choices made."""
        started, now_s = self._timer(), now.timestamp()
        self._forget_before(now_s - self._history_s)
        wanted = None if keys is None else list(keys)
        if wanted is None:
            fits = self._fits_due(now)
        else:
            with self._lock:
                serving = {k: self._choices[k].serving for k in wanted if k in self._choices}
            fits = {name: [k for k in wanted if serving.get(k) == name] for name in self._online()}
        done = 0
        for name, forecaster in self._online().items():  # each also forgets stale series
            left_s = budget_s - (self._timer() - started)
            done += forecaster.refit(now, fits.get(name, []), budget_s=left_s)
        for key in self._choices_due(now_s) if wanted is None else wanted:
            if self._timer() - started >= budget_s:
                break
            self._choose(key, now)
            done += 1
        return done

    def _fits_due(self, now: datetime) -> dict[str, list[SeriesKey]]:
        with self._lock:
            serving = {key: choice.serving for key, choice in self._choices.items()}
        return {name: [key for key in forecaster.refit_due(now) if serving.get(key) == name]
                for name, forecaster in self._online().items()}  # fmt: skip

    def _choices_due(self, now_s: float) -> list[SeriesKey]:
        def due(c: _Choice) -> bool:  # asked for, and due again, or asked at a new horizon
            return c.horizon_s is not None and (
                now_s >= c.next_s or c.chosen_horizon_s not in (None, c.horizon_s)
            )

        with self._lock:
            return [key for key, choice in self._choices.items() if due(choice)]

    def _choose(self, key: SeriesKey, now: datetime) -> None:
        """Backtest every candidate on the series' history, rank them, and serve the best."""
        now_s = now.timestamp()
        with self._lock:
            choice = self._choices.get(key)
            horizon_s = None if choice is None else choice.horizon_s
        if horizon_s is None:
            return
        times, values = clean(*self._keeper.history(key), self._step_s)
        history_s = len(values) * self._step_s
        if history_s < self._choose_after_s:
            next_s = now_s + self._choose_after_s - history_s
            why = (f"{NOT_ENOUGH_HISTORY}: {self._choose_after_s / 60:g} min of clean history "
                   f"needed, kept by {_iso(next_s)} at the earliest")  # fmt: skip
            self._wait(key, why, next_s)
            return
        times, values = times[-self._backtest_steps :], values[-self._backtest_steps :]
        horizon_steps = max(1, round(horizon_s / self._step_s))
        if len(values) - horizon_steps <= self._warmup_steps:
            why = f"{NOT_ENOUGH_HISTORY} {horizon_s:g} s ahead"
            self._wait(key, why, now_s + self._choose_every_s)
            return
        capacity = self._capacity(key, values)
        trials = {name: self._trial(candidate, times, values, horizon_steps, capacity)
                  for name, candidate in self._candidates.items()}  # fmt: skip
        ranked = rank(trials, self._quantile)
        why = explain(ranked, trials, self._quantile)
        refused = self._serve(key, ranked[0], horizon_s, now)
        with self._lock:
            choice = self._choices.get(key)
            if choice is not None:
                choice.why = why if refused is None else f"{why}; but {refused}"
                choice.trials, choice.capacity_per_replica = trials, capacity
                choice.chosen_at_s, choice.chosen_horizon_s = now_s, horizon_s
                choice.next_s = now_s + self._choose_every_s

    def _trial(
        self,
        candidate: Candidate,
        times: FloatArray,
        values: FloatArray,
        horizon_steps: int,
        capacity_per_replica: float,
    ) -> Trial:
        return backtest_candidate(
            candidate, times, values, step_s=self._step_s, horizon_steps=horizon_steps,
            first_origin=self._warmup_steps, refit_every_steps=self._refit_every_steps,
            quantile=self._quantile, capacity_per_replica=capacity_per_replica,
            gpus_per_replica=self._gpus_per_replica,
        )  # fmt: skip

    def _serve(self, key: SeriesKey, name: str, horizon_s: float, now: datetime) -> str | None:
        """Make ``name`` serve ``key``: fed the history kept, then fitted. Returns why it
        could not (the one serving goes on), or None."""
        forecaster = self._forecasters[name]
        with self._lock:  # the tick waits the few milliseconds the history takes to feed
            choice = self._choices.get(key)
            if choice is None or choice.serving == name:
                return None
            if name not in choice.fed:
                self._feed_history(key, name)
                choice.fed = (*choice.fed, name)
        if isinstance(forecaster, OnlineForecaster):
            forecaster.expect(key, horizon_s)
            forecaster.refit(now, [key])
            error = forecaster.describe(key)["fitError"]
            if error is not None:
                with self._lock:
                    self._feed_only(choice, choice.serving)
                return f"{name} could not be fitted ({error}): {choice.serving} serves"
        with self._lock:
            choice.serving = name
            self._feed_only(choice, name)
        return None

    def _feed_only(self, choice: _Choice, serving: str) -> None:
        """Feed the series to the history keeper and to ``serving`` only (under the lock)."""
        choice.fed = tuple(n for n in choice.fed if n in (self._default, serving))

    def _feed_history(self, key: SeriesKey, name: str) -> None:
        """Give candidate ``name`` the history the keeper holds of ``key``."""
        forecaster = self._forecasters[name]
        times, values = self._keeper.history(key)
        if isinstance(forecaster, OnlineForecaster):
            points = [(datetime.fromtimestamp(t, UTC), v)
                      for t, v in zip(times.tolist(), values.tolist(), strict=True)]  # fmt: skip
            forecaster.seed(key, points)
            return
        # the moving average reads its window only; fed in order, the newer values push
        # out any it kept from serving this series before
        if not len(times):
            return
        recent = times > times[-1] - self._candidates[name].window_s
        for t, v in zip(times[recent].tolist(), values[recent].tolist(), strict=True):
            forecaster.update(key, datetime.fromtimestamp(t, UTC), v)

    def _wait(self, key: SeriesKey, why: str, next_s: float) -> None:
        with self._lock:
            choice = self._choices.get(key)
            if choice is not None:
                choice.why, choice.next_s = why, next_s

    def _capacity(self, key: SeriesKey, values: FloatArray) -> float:
        given = self._capacity_per_replica
        capacity = given(key) if callable(given) else given
        if capacity is not None and math.isfinite(capacity) and capacity > 0:
            return float(capacity)
        return default_capacity(values)

    # -- audit -----------------------------------------------------------------------------

    def describe(self, key: SeriesKey) -> dict[str, Any]:
        """The serving model's audit (see ``OnlineForecaster.describe``), with ``model``
        its name, ``chosenBy`` "auto", ``why`` it serves, ``choiceAt`` (None: no choice
        yet), the ``capacityPerReplica`` the choice assumed, and each candidate's score
        under ``candidates``. JSON-ready."""
        with self._lock:
            choice = self._choices.get(key) or self._new_choice()
            serving, why, trials = choice.serving, choice.why, dict(choice.trials)
            chosen_at_s, capacity = choice.chosen_at_s, choice.capacity_per_replica
        about = dict(self._forecasters[serving].describe(key))
        chosen_at = None if chosen_at_s is None else _iso(chosen_at_s)
        if self._candidates[serving].model_factory is None:  # the baseline: nothing to fit
            about.setdefault("params", {"windowS": self._candidates[serving].window_s})
            about.setdefault("fittedAt", chosen_at)
        return {
            **about,
            "model": serving,
            "chosenBy": "auto",
            "why": why,
            "choiceAt": chosen_at,
            "capacityPerReplica": capacity,
            "candidates": {name: trial.audit() for name, trial in trials.items()},
        }

    # -- helpers ---------------------------------------------------------------------------

    def _online(self) -> dict[str, OnlineForecaster]:
        return {n: f for n, f in self._forecasters.items() if isinstance(f, OnlineForecaster)}

    def _choice(self, key: SeriesKey) -> _Choice:
        choice = self._choices.get(key)
        if choice is None:
            choice = self._choices[key] = self._new_choice()
        return choice

    def _new_choice(self) -> _Choice:
        return _Choice(serving=self._default, fed=(self._default,))

    def _forget_before(self, cutoff_s: float) -> None:
        with self._lock:
            for key in [k for k, c in self._choices.items() if c.seen_s < cutoff_s]:
                del self._choices[key]


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()

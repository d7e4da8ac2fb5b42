"""Forecasts trained from the metrics history, the models recorded after each fit, and
fits that never hold a tick up."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from pdscaler.control.clock import FakeClock
from pdscaler.control.controller import FORECAST, Controller, ControllerConfig
from pdscaler.control.fakes import FakeHistorySource
from pdscaler.control.training import TRAIN_LOOKBACK
from pdscaler.domain.policy import Role
from pdscaler.domain.signals import PoolKey, SeriesKey, SignalName
from pdscaler.forecast.baselines import LastValue
from pdscaler.forecast.models import Holt
from pdscaler.forecast.online import OnlineForecaster
from pdscaler.store.db import Database
from pdscaler.store.forecasts import ForecastModelStore
from tests.conftest import auth
from tests.control.harness import INTERVAL, NS, Harness
from tests.factories import decision

P, D = Role.PREFILL, Role.DECODE
RATE = SignalName.ARRIVAL_RATE


class Seeded(LastValue):
    """Keeps what it was seeded with."""

    def __init__(self) -> None:
        super().__init__()
        self.seeded: dict[SeriesKey, list[tuple[datetime, float]]] = {}

    def seed(self, key: SeriesKey, points: Iterable[tuple[datetime, float]]) -> int:
        kept = list(points)
        self.seeded[key] = kept
        return super().seed(key, kept)


def _controller(h: Harness, forecaster: Any, **kwargs: Any) -> Controller:
    return Controller(
        policies=h.policies, decisions=h.decisions, metrics=h.metrics, actuator=h.actuator,
        forecaster=forecaster, clock=h.clock,
        config=ControllerConfig(interval=INTERVAL, max_sample_age_s=60,
                                forecaster_for=lambda _spec: forecaster),
        **kwargs,
    )  # fmt: skip


def _ramp(source: FakeHistorySource, key: PoolKey, end: datetime, minutes: int) -> None:
    steps = minutes * 4
    source.series[(key, RATE)] = [(end - INTERVAL * (steps - i), float(i)) for i in range(steps)]


def test_forecasters_learn_the_history_before_the_first_tick(
    db: Database, clock: FakeClock
) -> None:
    h = Harness(db, clock)
    h.add_policy({"spec": {"forecast": {"model": "lastValue"}}})
    source, forecaster = FakeHistorySource(), Seeded()
    key = PoolKey(NS, "llama", P)
    _ramp(source, key, clock.now(), minutes=30)
    h.controller = _controller(h, forecaster, history_source=source)

    taken = h.controller.train_forecasts()

    assert taken == 1  # the last value keeps the newest
    assert len(forecaster.seeded[(key, RATE)]) == 120
    assert forecaster.predict((key, RATE), clock.now(), 60) == 119.0
    # one range query per signal, over the lookback, one value per loop interval
    assert sorted(q[0] for q in source.queries) == sorted(FORECAST)
    assert {(q[2] - q[1], q[3]) for q in source.queries} == {(TRAIN_LOOKBACK, 15)}


def test_samples_from_a_pool_whose_replicas_were_all_warming_up_are_left_out(
    db: Database, clock: FakeClock
) -> None:
    h = Harness(db, clock)
    h.add_policy({"spec": {"forecast": {"model": "lastValue"}}})
    source, forecaster = FakeHistorySource(), Seeded()
    key = PoolKey(NS, "llama", P)
    now = clock.now()
    _ramp(source, key, now, minutes=10)
    warm_at = now - timedelta(minutes=5)
    h.decisions.record_many([
        replace(decision(warm_at, current=2), ready_replicas=0, pending_replicas=2),
        replace(decision(warm_at + INTERVAL, current=2), ready_replicas=1, pending_replicas=1),
    ])  # fmt: skip
    h.controller = _controller(h, forecaster, history_source=source)

    h.controller.train_forecasts()

    times = [at for at, _ in forecaster.seeded[(key, RATE)]]
    assert warm_at not in times  # the tick with none ready
    assert warm_at + INTERVAL in times  # one ready: it served, the sample stays
    assert len(times) == 40 - 1


def test_the_loop_does_not_learn_while_every_replica_is_still_warming_up(
    db: Database, clock: FakeClock
) -> None:
    h = Harness(db, clock)
    h.add_policy({"spec": {"forecast": {"model": "movingAverage"}}}, prefill=2)
    h.actuator.observe(NS, "llama-prefill", ready_replicas=0, pending_replicas=2)
    forecaster = LastValue()
    h.controller = _controller(h, forecaster)
    h.observe(P, arrivalRate=0.0, queuedPrefillTokens=0)
    h.observe(D, kvCacheUtilization=0.5)

    h.tick()

    assert forecaster.predict((PoolKey(NS, "llama", P), RATE), clock.now(), 60) is None
    assert forecaster.predict((PoolKey(NS, "llama", D), RATE), clock.now(), 60) is None
    h.actuator.observe(NS, "llama-prefill", ready_replicas=1, pending_replicas=1)
    h.tick()
    assert forecaster.predict((PoolKey(NS, "llama", P), RATE), clock.now(), 60) == 0.0


def test_without_history_the_forecasts_learn_live(db: Database, clock: FakeClock) -> None:
    h = Harness(db, clock)
    h.add_policy({"spec": {"forecast": {"model": "lastValue"}}})
    source, forecaster = FakeHistorySource(), Seeded()
    source.failure = ConnectionError("prometheus is down")
    h.controller = _controller(h, forecaster, history_source=source)
    h.observe(P, arrivalRate=7, queuedPrefillTokens=0)
    h.observe(D, kvCacheUtilization=0.5)

    assert h.controller.train_forecasts() == 0
    h.tick()

    assert (h.last(P).record.forecast or {})["arrivalRate"] == 7


def _holt() -> OnlineForecaster:
    return OnlineForecaster(lambda: Holt(step_s=15.0), name="holt", min_history_s=60,
                            refit_every_s=60, step_s=15.0)  # fmt: skip


def test_each_fitted_model_is_recorded_and_read_back_after_a_restart(
    db: Database, clock: FakeClock, client: TestClient
) -> None:
    h = Harness(db, clock)
    h.add_policy({"spec": {"forecast": {"model": "holt"}}})
    h.controller = _controller(h, _holt(), forecast_models=ForecastModelStore(db))
    for i in range(8):
        h.observe(P, arrivalRate=10 + i, queuedPrefillTokens=0)
        h.observe(D, kvCacheUtilization=0.5)
        h.tick()

    h.controller.refit_forecasts(budget_s=10.0)
    first = ForecastModelStore(db).of_policy(NS, "llama")
    clock.advance(timedelta(seconds=1))
    h.controller.refit_forecasts(budget_s=10.0)  # no fit due: nothing written again

    stored = ForecastModelStore(db).of_policy(NS, "llama")  # as a restarted pdscaler reads
    assert stored == first
    rate = next(r for r in stored if r.pool.role is P and r.signal == "arrivalRate")
    assert rate.model == "holt"
    assert rate.fitted_at is not None
    assert rate.description["params"]["step_s"] == 15.0
    response = client.get(f"/v1/policies/{NS}/llama/forecasts", headers=auth("viewer"))
    assert response.status_code == 200
    items = {(i["role"], i["signal"]): i for i in response.json()["items"]}
    assert items[("prefill", "arrivalRate")]["model"] == "holt"
    assert items[("prefill", "arrivalRate")]["description"]["params"]["step_s"] == 15.0
    assert client.get(f"/v1/policies/{NS}/nope/forecasts",
                      headers=auth("viewer")).status_code == 404  # fmt: skip


class BlockingModel:
    """A model whose fit waits until the test lets it finish."""

    def __init__(self, started: threading.Event, release: threading.Event) -> None:
        self.started, self.release = started, release

    def fit(self, times: Any, values: Any, horizon_steps: int = 1) -> BlockingModel:
        self.started.set()
        self.release.wait(timeout=60)  # a guard against a hung test, not a timing
        return self

    def predict(self, horizon_steps: int, times: Any = None, values: Any = None) -> float:
        return 1.0


def test_a_tick_runs_while_a_fit_is_in_progress(db: Database, clock: FakeClock) -> None:
    h = Harness(db, clock)
    h.add_policy({"spec": {"forecast": {"model": "holt"}}})
    started, release = threading.Event(), threading.Event()
    forecaster = OnlineForecaster(lambda: BlockingModel(started, release), name="blocking",
                                  min_history_s=0, refit_every_s=60, step_s=15.0)  # fmt: skip
    h.controller = _controller(h, forecaster)
    h.observe(P, arrivalRate=10, queuedPrefillTokens=0)
    h.observe(D, kvCacheUtilization=0.5)
    h.tick()  # the series now exist and want a fit
    fitting = threading.Thread(target=h.controller.refit_forecasts, args=(60.0,))
    fitting.start()
    try:
        assert started.wait(timeout=60)

        report = h.tick()  # while the fit is blocked

        assert fitting.is_alive()  # the fit has not finished...
        assert report.decisions == 2
        assert report.audited
        assert (h.last(P).record.forecast or {})["fallback"] == "notFitted"
    finally:
        release.set()
        fitting.join(timeout=60)
    assert not fitting.is_alive()

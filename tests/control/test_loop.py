"""The scheduled loop, the readiness it reports, and the explain route."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from prometheus_api_client import PrometheusConnect

from pdscaler.config import Settings
from pdscaler.control.clock import FakeClock
from pdscaler.control.controller import Controller
from pdscaler.domain.leader import LeaderStatus
from pdscaler.domain.policy import Role
from pdscaler.metrics.prometheus import PrometheusSource, SourceConfig
from pdscaler.store.db import Database
from pdscaler.store.decisions import DecisionFilter
from pdscaler.wiring import Backends, build_runtime
from tests.conftest import auth
from tests.control.harness import Harness
from tests.factories import policy_doc

P, D = Role.PREFILL, Role.DECODE


def _runtime(settings: Settings, db: Database, clock: FakeClock, h: Harness):  # type: ignore[no-untyped-def]
    loop_on = settings.model_copy(
        update={"loop": settings.loop.model_copy(update={"enabled": True})}
    )
    return build_runtime(loop_on, db, clock, Backends(h.metrics, h.actuator))


def test_job_runs_one_tick_at_a_time_and_coalesces(
    settings: Settings, db: Database, clock: FakeClock
) -> None:
    runtime = _runtime(settings, db, clock, Harness(db, clock))
    assert runtime.loop is not None

    runtime.loop.start(paused=True)
    try:
        job = runtime.loop.job
        assert job is not None
        assert (job.max_instances, job.coalesce) == (1, True)
        assert job.trigger.interval == settings.loop.interval
        forecast = runtime.loop._scheduler.get_job("forecast")  # fits beside the tick
        assert forecast is not None
        assert (forecast.max_instances, forecast.coalesce) == (1, True)
    finally:
        runtime.loop.stop()


def test_readyz_follows_the_loop(settings: Settings, db: Database, clock: FakeClock) -> None:
    h = Harness(db, clock)
    h.add_policy()
    runtime = _runtime(settings, db, clock, h)
    assert runtime.loop is not None
    client = TestClient(runtime.app)

    not_started = client.get("/readyz")
    runtime.loop.start(paused=True)
    runtime.loop.run_once()
    ready = client.get("/readyz")
    clock.advance(3 * settings.loop.interval + timedelta(seconds=1))
    late = client.get("/readyz")
    runtime.loop.stop()

    assert not_started.status_code == 503
    assert ready.status_code == 200
    assert late.status_code == 503
    assert "last tick" in late.json()["message"]


def test_a_failing_tick_does_not_end_the_loop(
    settings: Settings, db: Database, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(db, clock)
    h.add_policy()
    runtime = _runtime(settings, db, clock, h)
    assert runtime.loop is not None
    runtime.loop.start(paused=True)
    real_tick = Controller.tick

    def broken(self: Controller, now: object = None) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Controller, "tick", broken)
    runtime.loop.run_once()  # raises inside; logged, not propagated
    clock.advance(3 * settings.loop.interval + timedelta(seconds=1))
    failing = runtime.loop.health()
    monkeypatch.setattr(Controller, "tick", real_tick)
    runtime.loop.run_once()
    recovered = runtime.loop.health()
    runtime.loop.stop()

    assert failing.healthy is False
    assert recovered.healthy is True


def test_explain_shows_the_last_decision_of_each_pool(
    settings: Settings, db: Database, clock: FakeClock
) -> None:
    h = Harness(db, clock)
    h.add_policy(prefill=2)
    h.observe(P, queuedPrefillTokens=80_000)
    h.observe(D, kvCacheUtilization=0.9)
    h.tick()
    client = TestClient(build_runtime(settings, db, clock).app)

    body = client.get("/v1/policies/inference/llama/explain", headers=auth("viewer")).json()

    assert body["version"] == 1
    prefill = next(p for p in body["pools"] if p["role"] == "prefill")
    assert (prefill["currentReplicas"], prefill["desiredReplicas"]) == (2, 5)
    assert prefill["steps"][0]["reason"] == "TargetTracking"
    assert "prefill: 2 -> 5 (scale_up, applied)" in prefill["text"]
    assert "queuedPrefillTokens=80000" in prefill["text"]
    assert "recommend" in prefill["text"]


def test_a_policy_reports_the_metric_families_the_loop_cannot_find(
    settings: Settings, db: Database, clock: FakeClock
) -> None:
    class Probed(PrometheusSource):
        """A source that has probed and found only vLLM's gauges."""

        def __init__(self) -> None:
            super().__init__(PrometheusConnect(url="http://127.0.0.1:1"), SourceConfig())
            self._names = frozenset({"vllm:num_requests_running"})
            self._probed_at = float("inf")

    h = Harness(db, clock)
    loop_on = settings.model_copy(
        update={"loop": settings.loop.model_copy(update={"enabled": True})}
    )
    runtime = build_runtime(loop_on, db, clock, Backends(Probed(), h.actuator))
    client = TestClient(runtime.app)
    client.post("/v1/policies", json=policy_doc(), headers=auth("editor"))

    status = client.get("/v1/policies/inference/llama", headers=auth("viewer")).json()["status"]

    assert status["warnings"]
    assert status["warnings"][0].startswith("vllm: no series for")
    assert "vllm:kv_cache_usage_perc" in status["warnings"][0]


class Standby:
    """Leadership held by another replica."""

    def step(self) -> bool:
        return False

    def confirm(self) -> bool:
        return False

    def release(self) -> None:
        pass

    def status(self) -> LeaderStatus:
        return LeaderStatus(False, "pdscaler-1", "standby; the leader is pdscaler-1")


def test_a_standby_is_ready_and_says_who_leads(
    settings: Settings, db: Database, clock: FakeClock
) -> None:
    h = Harness(db, clock)
    h.add_policy()
    loop_on = settings.model_copy(
        update={"loop": settings.loop.model_copy(update={"enabled": True})}
    )
    runtime = build_runtime(loop_on, db, clock, Backends(h.metrics, h.actuator, Standby()))
    assert runtime.loop is not None
    client = TestClient(runtime.app)
    runtime.loop.start(paused=True)
    try:
        runtime.loop.run_once()
        clock.advance(10 * settings.loop.interval)
        ready = client.get("/readyz")
    finally:
        runtime.loop.stop()

    assert ready.status_code == 200
    assert ready.json()["warnings"] == ["control loop: standby; the leader is pdscaler-1"]
    assert h.actuator.writes == []
    assert h.decisions.page(DecisionFilter(), limit=1)[0] == []

"""pdscaler's own metrics: what a tick exports, their names, and /metrics."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from pdscaler import __version__, wiring
from pdscaler.config import Settings
from pdscaler.control.clock import FakeClock
from pdscaler.control.controller import Controller, ControllerConfig
from pdscaler.domain.decision import TickSummary
from pdscaler.domain.errors import Forbidden
from pdscaler.domain.policy import Role
from pdscaler.forecast.baselines import LastValue
from pdscaler.grafana import queries
from pdscaler.store.db import Database
from pdscaler.telemetry import Telemetry
from tests.control.harness import INTERVAL, NS, Harness

P, D = Role.PREFILL, Role.DECODE


def samples(telemetry: Telemetry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition, by name and labels."""
    text = telemetry.exposition().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(telemetry: Telemetry, name: str, **labels: str) -> float | None:
    return samples(telemetry).get((name, frozenset(labels.items())))


class Scored(LastValue):
    """The last value, with a recent error to report."""

    def describe(self, key: Any) -> dict[str, Any]:
        return {"model": "lastValue", "recentMae": 0.5}


class Raising:
    def tick_done(self, tick: TickSummary) -> None:
        raise RuntimeError("an observer bug")


def _harness(db: Database, clock: FakeClock, telemetry: Telemetry) -> Harness:
    h = Harness(db, clock)
    h.add_policy({"spec": {"slo": {"ttftMs": 800, "itlMs": 30},
                           "forecast": {"model": "lastValue"}}})  # fmt: skip
    forecaster = Scored()
    h.controller = Controller(
        policies=h.policies, decisions=h.decisions, metrics=h.metrics, actuator=h.actuator,
        forecaster=LastValue(), clock=clock,
        config=ControllerConfig(interval=INTERVAL, max_sample_age_s=60,
                                forecaster_for=lambda _spec: forecaster),
        observers=(Raising(), telemetry),
    )  # fmt: skip
    return h


def test_a_tick_exports_each_pools_replicas_decisions_signals_and_writes(
    db: Database, clock: FakeClock
) -> None:
    telemetry = Telemetry()
    h = _harness(db, clock, telemetry)
    h.observe(P, queuedPrefillTokens=16_384 * 4, arrivalRate=12)  # prefill: 2 -> 4
    h.observe(D, kvCacheUtilization=0.5)

    h.tick()  # the raising observer is logged; the tick and the next observer go on

    pool = {"namespace": NS, "policy": "llama", "role": "prefill"}
    assert value(telemetry, "pdscaler_desired_replicas", **pool) == 4
    assert value(telemetry, "pdscaler_current_replicas", **pool) == 2
    assert value(telemetry, "pdscaler_ready_replicas", **pool) == 2
    assert value(telemetry, "pdscaler_pending_replicas", **pool) == 0
    reason = h.last(P).record.steps[-1].reason
    assert value(telemetry, "pdscaler_decisions_total", **pool, action="scale_up",
                 reason=reason) == 1  # fmt: skip
    assert value(telemetry, "pdscaler_actuations_total", status_code="200") == 1
    assert value(telemetry, "pdscaler_signal_quality_total", quality="fresh") == 3
    assert value(telemetry, "pdscaler_forecast_value", **pool, signal="arrivalRate") == 12
    assert value(telemetry, "pdscaler_forecast_recent_error", **pool, signal="arrivalRate") == 0.5
    assert value(telemetry, "pdscaler_slo_ttft_seconds", namespace=NS, policy="llama") == 0.8
    assert value(telemetry, "pdscaler_slo_itl_seconds", namespace=NS, policy="llama") == 0.03
    assert value(telemetry, "pdscaler_tick_duration_seconds_count") == 1
    assert value(telemetry, "pdscaler_metrics_source_errors_total") == 0
    assert value(telemetry, "pdscaler_build_info", version=__version__) == 1


def test_failed_writes_and_a_failed_source_are_counted(db: Database, clock: FakeClock) -> None:
    telemetry = Telemetry()
    h = _harness(db, clock, telemetry)
    h.observe(P, queuedPrefillTokens=16_384 * 4)
    h.observe(D, kvCacheUtilization=0.5)
    h.actuator.fail_next.append(Forbidden("scale of llama-prefill: HTTP 403"))

    h.tick()
    h.metrics.failure = ConnectionError("prometheus is down")
    h.tick()

    assert value(telemetry, "pdscaler_actuations_total", status_code="403") == 1
    assert value(telemetry, "pdscaler_metrics_source_errors_total") == 1
    assert value(telemetry, "pdscaler_signal_quality_total", quality="error") is not None


def test_the_series_of_a_pool_no_longer_decided_go_away(db: Database, clock: FakeClock) -> None:
    telemetry = Telemetry()
    h = _harness(db, clock, telemetry)
    h.observe(P, queuedPrefillTokens=0)
    h.observe(D, kvCacheUtilization=0.5)
    h.tick()
    pool = {"namespace": NS, "policy": "llama", "role": "decode"}
    assert value(telemetry, "pdscaler_desired_replicas", **pool) is not None

    h.policies.delete(NS, "llama", expected_version=None, author="t", comment="",
                      now=clock.now())  # fmt: skip
    h.tick()

    assert value(telemetry, "pdscaler_desired_replicas", **pool) is None
    assert value(telemetry, "pdscaler_slo_ttft_seconds", namespace=NS, policy="llama") is None
    # counters keep what they counted
    assert value(telemetry, "pdscaler_tick_duration_seconds_count") == 2


def test_names_follow_prometheus_conventions() -> None:
    telemetry = Telemetry()
    for family in text_string_to_metric_families(telemetry.exposition().decode()):
        if not family.name.startswith("pdscaler_"):
            continue
        assert re.fullmatch(r"pdscaler_[a-z][a-z0-9_]*", family.name)
        if family.type == "counter":  # exposed with _total, named without it
            assert not family.name.endswith("_total")
        if family.type == "histogram":
            assert family.name.endswith("_seconds")
        if family.type == "gauge":
            assert not family.name.endswith(("_total", "_count", "_sum", "_bucket"))
        assert family.documentation


def test_every_pdscaler_metric_the_dashboard_queries_is_exported(
    db: Database, clock: FakeClock
) -> None:
    telemetry = Telemetry()
    telemetry.leader(lambda: True)
    h = _harness(db, clock, telemetry)
    h.observe(P, queuedPrefillTokens=16_384 * 4, arrivalRate=12)
    h.observe(D, kvCacheUtilization=0.5)
    h.tick()
    exported = {name for name, _labels in samples(telemetry)}
    constants = [v for k, v in vars(queries).items() if k.isupper()]
    texts = [
        t
        for c in constants
        for t in (c.values() if isinstance(c, dict) else [c])
        if isinstance(t, str)
    ]
    wanted = {name for text in texts for name in re.findall(r"pdscaler_[a-z_]+", text)}

    assert wanted  # the dashboard does query pdscaler's metrics
    assert wanted <= exported
    assert value(telemetry, "pdscaler_leader") == 1


@pytest.mark.parametrize("loop", [False, True])
def test_metrics_are_served_at_slash_metrics(
    settings: Settings, db: Database, clock: FakeClock, loop: bool
) -> None:
    loop_settings = settings.loop.model_copy(update={"enabled": loop,
                                                     "interval": timedelta(seconds=1)})  # fmt: skip
    configured = settings.model_copy(update={"loop": loop_settings})
    backends = wiring.Backends(metrics=Harness(db, clock).metrics,
                               actuator=Harness(db, clock).actuator, leadership=None)  # fmt: skip
    runtime = wiring.build_runtime(configured, db, clock, backends)
    with TestClient(runtime.app) as client:
        response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert f'pdscaler_build_info{{version="{__version__}"}} 1.0' in response.text
    assert ("pdscaler_leader 1.0" in response.text) is loop

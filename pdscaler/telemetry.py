"""pdscaler's own metrics, served at ``/metrics`` in Prometheus's text format.

One :class:`Telemetry` owns a registry (injectable, so tests and two apps in one process
do not share one) and is told about each tick (:meth:`tick_done`). Names and labels
follow Prometheus's conventions: base units (seconds), ``_total`` on counters, one
metric per thing measured with what varies in labels, and per-pool series labelled
``namespace``, ``policy``, ``role``. Series of a pool that is no longer decided (its
policy deleted, or out of this loop's namespaces) are removed at the next tick.

Nothing here can fail a tick: the controller calls it after the tick's work is done, and
every update is in memory.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from pdscaler import __version__
from pdscaler.domain.decision import DecisionRecord, TickSummary

POOL = ("namespace", "policy", "role")
# A tick of 1,000 policies takes about 0.6 s; the buckets reach well past the interval.
TICK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# The forecast signals whose predicted value is exported (the load, not the lengths).
FORECAST_SIGNALS = ("arrivalRate", "inputTokenRate", "outputTokenRate")


class Telemetry:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._lock = threading.Lock()
        self._replicas = {
            kind: Gauge(f"pdscaler_{kind}_replicas", f"Replicas of a pool: {words}.", POOL,
                        registry=r)
            for kind, words in (
                ("desired", "what pdscaler decided in its last tick"),
                ("current", "the target's spec.replicas when last read"),
                ("ready", "ready pods behind the target when last read"),
                ("pending", "pods behind the target not ready yet when last read"),
            )
        }  # fmt: skip
        self._decisions = Counter(
            "pdscaler_decisions", "Decisions made, by action and by the reason of the step "
            "that set the final value.", (*POOL, "action", "reason"), registry=r,
        )  # fmt: skip
        self._tick = Histogram(
            "pdscaler_tick_duration_seconds", "Wall time of one control-loop tick.",
            buckets=TICK_BUCKETS, registry=r,
        )  # fmt: skip
        self._source_errors = Counter(
            "pdscaler_metrics_source_errors", "Ticks whose metrics source failed as a whole.",
            registry=r,
        )  # fmt: skip
        self._quality = Counter(
            "pdscaler_signal_quality", "Signals read, by quality (fresh, stale, empty, nan, "
            "error).", ("quality",), registry=r,
        )  # fmt: skip
        self._actuations = Counter(
            "pdscaler_actuations", "Writes of /scale, by the API server's HTTP status (error: "
            "no answer).", ("status_code",), registry=r,
        )  # fmt: skip
        self._forecast = Gauge(
            "pdscaler_forecast_value", "The load forecast at the cold-start horizon (the upper "
            "quantile), per signal.", (*POOL, "signal"), registry=r,
        )  # fmt: skip
        self._forecast_error = Gauge(
            "pdscaler_forecast_recent_error", "Mean absolute error of the forecasts that came "
            "due lately, per signal.", (*POOL, "signal"), registry=r,
        )  # fmt: skip
        self._slo = {
            name: Gauge(f"pdscaler_slo_{name}_seconds", f"The policy's {name.upper()} SLO.",
                        ("namespace", "policy"), registry=r)
            for name in ("ttft", "itl")
        }  # fmt: skip
        self._leader = Gauge(
            "pdscaler_leader", "1 while this replica holds the leader lease (or runs alone).",
            registry=r,
        )  # fmt: skip
        Gauge("pdscaler_build_info", "pdscaler's version; always 1.", ("version",),
              registry=r).labels(__version__).set(1)  # fmt: skip
        ProcessCollector(registry=r)
        # each gauge family's children by label values, as last set: to set them again
        # without a label lookup (a tick sets about ten per pool), and to remove the ones
        # that go away
        self._children: dict[Gauge, dict[tuple[str, ...], Gauge]] = {}
        self._counted: dict[tuple[str, ...], Counter] = {}

    def leader(self, leading: Callable[[], bool]) -> None:
        """Read whether this replica leads at each scrape."""
        self._leader.set_function(lambda: 1.0 if leading() else 0.0)

    def count(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """A counter whose value ``read`` gives at each scrape (a count kept elsewhere)."""
        self.registry.register(_ReadCounter(name, help_text, read))

    def tick_done(self, tick: TickSummary) -> None:
        with self._lock:
            self._tick.observe(tick.duration_s)
            if tick.source_failed:
                self._source_errors.inc()
            for status, n in tick.actuations.items():
                self._actuations.labels(status).inc(n)
            quality: Tally[str] = Tally()
            current: dict[Gauge, dict[tuple[str, ...], float]] = {}
            for record in tick.records:
                self._decision(record, quality, current)
            for name, n in quality.items():
                self._quality.labels(name).inc(n)
            for (namespace, policy), (ttft_ms, itl_ms) in tick.slos.items():
                for gauge, ms in ((self._slo["ttft"], ttft_ms), (self._slo["itl"], itl_ms)):
                    if ms is not None:
                        current.setdefault(gauge, {})[(namespace, policy)] = ms / 1000
            for gauge in (*self._replicas.values(), self._forecast, self._forecast_error,
                          *self._slo.values()):  # fmt: skip
                self._replace(gauge, current.get(gauge, {}))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def _decision(
        self,
        record: DecisionRecord,
        quality: Tally[str],
        current: dict[Gauge, dict[tuple[str, ...], float]],
    ) -> None:
        pool = (record.policy_namespace, record.policy_name, record.role.value)
        reason = record.steps[-1].reason if record.steps else record.status.value
        labels = (*pool, record.action.value, reason)
        counted = self._counted.get(labels)
        if counted is None:
            counted = self._counted[labels] = self._decisions.labels(*labels)
        counted.inc()
        for kind, value in (
            ("desired", record.desired_replicas),
            ("current", record.current_replicas),
            ("ready", record.ready_replicas),
            ("pending", record.pending_replicas),
        ):
            if value is not None:
                current.setdefault(self._replicas[kind], {})[pool] = value
        quality.update(_qualities(record.signals.values()))
        forecast = record.forecast or {}
        for signal in FORECAST_SIGNALS:
            value = forecast.get(signal)
            if isinstance(value, int | float):
                current.setdefault(self._forecast, {})[(*pool, signal)] = float(value)
        error = forecast.get("recentMae")
        if isinstance(error, int | float):  # the audit scores the arrival rate's forecast
            current.setdefault(self._forecast_error, {})[(*pool, "arrivalRate")] = float(error)

    def _replace(self, gauge: Gauge, values: dict[tuple[str, ...], float]) -> None:
        """Set ``gauge`` to ``values``, and remove the label sets it had that are gone."""
        children = self._children.setdefault(gauge, {})
        for labels, value in values.items():
            child = children.get(labels)
            if child is None:
                child = children[labels] = gauge.labels(*labels)
            child.set(value)
        for labels in children.keys() - values.keys():
            gauge.remove(*labels)
            del children[labels]


def _qualities(signals: Iterable[Any]) -> Iterable[str]:
    for signal in signals:
        if isinstance(signal, dict) and isinstance(signal.get("quality"), str):
            yield signal["quality"]


class _ReadCounter(Collector):
    def __init__(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self._name, self._help, self._read = name, help_text, read

    def collect(self) -> Iterable[CounterMetricFamily]:
        yield CounterMetricFamily(self._name, self._help, value=self._read())

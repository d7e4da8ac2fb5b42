"""Replay one trace on the simulated cluster under one autoscaler, and measure the result.

The autoscaler is a step function called every ``interval_s`` simulated seconds. pdscaler
itself runs as in production: the real :class:`Controller` and engine, its audit in a
database, the simulator behind the ``MetricsSource`` and ``Actuator`` seams, and the
simulated time on a fake clock.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

from pdscaler.control.clock import FakeClock
from pdscaler.control.controller import Controller, ControllerConfig
from pdscaler.domain.policy import Policy, Role
from pdscaler.domain.profile import PerfProfile
from pdscaler.forecast.baselines import LastValue
from pdscaler.forecast.registry import forecaster_for
from pdscaler.sim.adapters import SimActuator, SimMetricsSource
from pdscaler.sim.cluster import Cluster, Outcome, SimConfig
from pdscaler.sim.traces import Request
from pdscaler.store import migrate
from pdscaler.store.db import Database, create_db_engine
from pdscaler.store.decisions import DecisionStore
from pdscaler.store.policies import PolicyStore

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
REFIT_EVERY_S = 30.0  # as the service's forecast job

# Called every interval with the cluster at that time; resizes its pools as it sees fit.
Step = Callable[[Cluster, float], None]


@dataclass(frozen=True)
class Sample:
    """The cluster at the end of one interval."""

    t: float
    arrivals_per_s: float
    replicas: dict[Role, int]  # asked for: ready and pending


@dataclass
class Replay:
    name: str
    outcomes: list[Outcome]
    gpu_seconds: dict[Role, float]
    timeline: list[Sample] = field(default_factory=list)
    span_s: float = 0.0

    def reversals(self, role: Role) -> int:
        """Direction changes of the pool's size (up then down, or down then up)."""
        sizes = [s.replicas[role] for s in self.timeline]
        moves = [b - a for a, b in pairwise(sizes) if b != a]
        return sum(1 for a, b in pairwise(moves) if (a > 0) != (b > 0))


def replay(
    name: str,
    trace: Sequence[Request],
    config: SimConfig,
    initial: dict[Role, int],
    step: Step,
    *,
    interval_s: float = 5.0,
    drain_s: float = 3600.0,
    on_interval: Callable[[Sample], None] | None = None,
) -> Replay:
    """Run ``trace`` to the end (and up to ``drain_s`` more for the last requests)."""
    cluster = Cluster(config, trace, initial)
    end = (trace[-1].arrival_s if trace else 0.0) + drain_s
    timeline: list[Sample] = []
    t, seen = 0.0, 0
    while t < end and not (cluster.done() and t > (trace[-1].arrival_s if trace else 0)):
        t += interval_s
        cluster.run_until(t)
        arrived = len(cluster.outcomes) - seen
        seen = len(cluster.outcomes)
        ready = {role: sum(cluster.counts(role)[:2]) for role in Role}
        sample = Sample(t, arrived / interval_s, ready)
        timeline.append(sample)
        if on_interval is not None:
            on_interval(sample)
        step(cluster, t)
    gpu = {role: cluster.gpu_seconds(role) for role in Role}
    return Replay(name, cluster.outcomes, gpu, timeline, t)


class PdscalerStep:
    """pdscaler's controller, ticking on the simulated clock against the simulated pools.

    Its audit goes to ``database_url`` (by default an SQLite file in a temporary directory,
    removed with this object).
    """

    def __init__(
        self,
        policy: Policy,
        profile: PerfProfile | None,
        interval_s: float = 5.0,
        database_url: str | None = None,
    ) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="pdscaler-replay-")
        url = database_url or f"sqlite:///{Path(self._tmp.name) / 'audit.db'}"
        self.db = Database(create_db_engine(url))
        migrate.upgrade(self.db.engine)
        self.clock = FakeClock(EPOCH)
        self.policies, self.decisions = PolicyStore(self.db), DecisionStore(self.db)
        self.policies.create(policy, author="bench", comment="replay", now=self.clock.now())
        self._policy = policy
        self._profile = profile
        self._interval_s = interval_s
        self._controller: Controller | None = None
        self._actuator: SimActuator | None = None

    def __call__(self, cluster: Cluster, t: float) -> None:
        if self._controller is None:
            self._controller = self._build(cluster)
        self.clock.advance((EPOCH + timedelta(seconds=t)) - self.clock.now())
        if t % REFIT_EVERY_S < self._interval_s:  # the forecast job, on simulated time
            self._controller.refit_forecasts(budget_s=math.inf)
        self._controller.tick()

    def close(self) -> None:
        self.db.engine.dispose()
        self._tmp.cleanup()

    def _build(self, cluster: Cluster) -> Controller:
        spec = self._policy.spec
        roles = {spec.pool(role).scale_target_ref.name: role for role in Role}
        self._actuator = SimActuator(cluster, roles)
        profile = self._profile
        step_s = self._interval_s
        config = ControllerConfig(
            interval=timedelta(seconds=self._interval_s),
            max_sample_age_s=60,
            identity="replay",
            profile_for=lambda _ref: profile,
            forecaster_for=lambda spec: forecaster_for(
                spec.model, quantile=spec.quantile, step_s=step_s, upper=True
            ),
        )
        return Controller(
            policies=self.policies, decisions=self.decisions,
            metrics=SimMetricsSource(cluster, EPOCH), actuator=self._actuator,
            forecaster=LastValue(), clock=self.clock, config=config,
        )  # fmt: skip

"""A controller wired to fakes at its seams and to a real database for the audit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pdscaler.control.clock import FakeClock
from pdscaler.control.controller import Controller, ControllerConfig, TickReport
from pdscaler.control.fakes import FakeMetricsSource, RecordingActuator
from pdscaler.domain.policy import Role, parse_policy
from pdscaler.domain.signals import PoolKey, PoolSignals, Signal, SignalName
from pdscaler.forecast.baselines import LastValue
from pdscaler.store.db import Database
from pdscaler.store.decisions import DecisionFilter, DecisionStore, StoredDecision
from pdscaler.store.policies import PolicyStore
from tests.factories import policy_doc

NS = "inference"
INTERVAL = timedelta(seconds=15)


class Harness:
    def __init__(self, db: Database, clock: FakeClock, audit_db: Database | None = None) -> None:
        self.clock = clock
        self.policies = PolicyStore(db)
        self.decisions = DecisionStore(db)
        self.metrics = FakeMetricsSource()
        self.actuator = RecordingActuator()
        self._audit = DecisionStore(audit_db) if audit_db else self.decisions
        self.controller = self.new_controller()

    def new_controller(self) -> Controller:
        """A fresh controller (as after a restart), with the same seams."""
        return Controller(
            policies=self.policies,
            decisions=self._audit,
            metrics=self.metrics,
            actuator=self.actuator,
            forecaster=LastValue(),
            clock=self.clock,
            config=ControllerConfig(interval=INTERVAL, max_sample_age_s=60, identity="test-0"),
        )

    def add_policy(self, patch: dict[str, Any] | None = None, *, name: str = "llama",
                   prefill: int = 2, decode: int = 2) -> None:  # fmt: skip
        doc = policy_doc(patch, name=name)
        doc["spec"]["prefill"]["scaleTargetRef"]["name"] = f"{name}-prefill"
        doc["spec"]["decode"]["scaleTargetRef"]["name"] = f"{name}-decode"
        self.policies.create(parse_policy(doc), author="t", comment="", now=self.clock.now())
        self.actuator.add(NS, f"{name}-prefill", prefill)
        self.actuator.add(NS, f"{name}-decode", decode)

    def observe(self, role: Role, name: str = "llama", **values: float | None) -> None:
        """Set a pool's signals, sampled now. A None value is an empty answer."""
        now = self.clock.now()
        signals = {
            SignalName(key): Signal.fresh(v, now) if v is not None else Signal.missing()
            for key, v in values.items()
        }
        self.metrics.set(PoolKey(NS, name, role), PoolSignals(signals))

    def tick(self, advance: timedelta = INTERVAL) -> TickReport:
        report = self.controller.tick()
        self.clock.advance(advance)
        return report

    def replicas(self, role: Role, name: str = "llama") -> int:
        return self.actuator.replicas(NS, f"{name}-{role.value}")

    def last(self, role: Role, name: str = "llama") -> StoredDecision:
        page, _ = self.decisions.page(DecisionFilter(policy=name, role=role), limit=1)
        return page[0]

    def reasons(self, role: Role, name: str = "llama") -> list[str]:
        return [s.reason for s in self.last(role, name).record.steps]

"""Fakes of the controller's seams, for tests and benchmarks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from pdscaler.domain.errors import Conflict, NotFound, PdscalerError
from pdscaler.domain.policy import ScaleTargetRef
from pdscaler.domain.signals import PoolKey, PoolQuery, PoolSignals, ScaleState, SignalName


class FakeMetricsSource:
    """Serves whatever signals a test sets; can be told to fail as a whole."""

    def __init__(self) -> None:
        self.signals: dict[PoolKey, PoolSignals] = {}
        self.failure: Exception | None = None
        self.calls = 0
        self.loads: dict[PoolKey, dict[str, float]] = {}

    def set(self, key: PoolKey, signals: PoolSignals) -> None:
        self.signals[key] = signals

    def observe(self, pools: Sequence[PoolQuery], now: datetime) -> Mapping[PoolKey, PoolSignals]:
        self.calls += 1
        if self.failure is not None:
            raise self.failure
        return {q.key: self.signals[q.key] for q in pools if q.key in self.signals}

    def pod_load(self, pool: PoolQuery, now: datetime) -> Mapping[str, float]:
        return self.loads.get(pool.key, {})


class FakeHistorySource:
    """Serves the history a test sets, per pool and signal, between the times asked; can
    be told to fail. Records each query (signal, start, end, step)."""

    def __init__(self) -> None:
        self.series: dict[tuple[PoolKey, SignalName], list[tuple[datetime, float]]] = {}
        self.failure: Exception | None = None
        self.queries: list[tuple[SignalName, datetime, datetime, int]] = []

    def history(
        self,
        pools: Sequence[PoolQuery],
        signal: SignalName,
        start: datetime,
        end: datetime,
        step_s: int = 60,
    ) -> Mapping[PoolKey, Sequence[tuple[datetime, float]]]:
        self.queries.append((signal, start, end, step_s))
        if self.failure is not None:
            raise self.failure
        return {
            q.key: [(at, v) for at, v in self.series.get((q.key, signal), []) if start <= at <= end]
            for q in pools
        }


@dataclass
class Write:
    namespace: str
    name: str
    replicas: int
    resource_version: str | None


@dataclass
class FakeTarget:
    state: ScaleState
    version: int = 1


@dataclass
class RecordingActuator:
    """An in-memory set of scale targets that records every write.

    Writes honour optimistic concurrency as the API server does: a write based on an old
    resource version is a Conflict. ``fail_next`` makes the next write raise instead.
    """

    targets: dict[tuple[str, str], FakeTarget] = field(default_factory=dict)
    writes: list[Write] = field(default_factory=list)
    fail_next: list[PdscalerError] = field(default_factory=list)
    # (namespace, name, pod load) of every prefer_removal call, before its scale-down
    removals: list[tuple[str, str, dict[str, float]]] = field(default_factory=list)

    def add(self, namespace: str, name: str, replicas: int, ready: int | None = None) -> None:
        ready = replicas if ready is None else ready
        state = ScaleState(replicas, ready, replicas - ready, "1")
        self.targets[(namespace, name)] = FakeTarget(state)

    def set_replicas(self, namespace: str, name: str, replicas: int) -> None:
        """Someone else scales the target (kubectl, another controller)."""
        target = self._target(namespace, name)
        target.version += 1
        target.state = replace(
            target.state,
            spec_replicas=replicas,
            ready_replicas=replicas,
            resource_version=str(target.version),
        )

    def replicas(self, namespace: str, name: str) -> int:
        return self._target(namespace, name).state.spec_replicas

    def observe(self, namespace: str, name: str, **state: object) -> None:
        """Set what a read of the target shows besides its size (``selector``,
        ``unschedulable``, ``managed_by``, ...)."""
        target = self._target(namespace, name)
        target.state = replace(target.state, **state)  # type: ignore[arg-type]

    def read_scale(self, namespace: str, target: ScaleTargetRef) -> ScaleState:
        return self._target(namespace, target.name).state

    def write_scale(
        self, namespace: str, target: ScaleTargetRef, replicas: int, resource_version: str | None
    ) -> str | None:
        if self.fail_next:
            raise self.fail_next.pop(0)
        found = self._target(namespace, target.name)
        if resource_version is not None and resource_version != found.state.resource_version:
            raise Conflict(f"{target.name} changed: at {found.state.resource_version}")
        found.version += 1
        found.state = replace(
            found.state,
            spec_replicas=replicas,
            ready_replicas=replicas,
            pending_replicas=0,
            resource_version=str(found.version),
        )
        self.writes.append(Write(namespace, target.name, replicas, resource_version))
        return found.state.resource_version

    def prefer_removal(
        self, namespace: str, target: ScaleTargetRef, selector: str, load: Mapping[str, float]
    ) -> int:
        self.removals.append((namespace, target.name, dict(load)))
        return len(load)

    def _target(self, namespace: str, name: str) -> FakeTarget:
        try:
            return self.targets[(namespace, name)]
        except KeyError:
            raise NotFound(f"{namespace}/{name} not found") from None

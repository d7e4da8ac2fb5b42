"""The control loop's tick: read, observe, forecast, decide, audit, act, record.

No row, no action: every decision is written (``pending`` when it will act, ``skipped``
otherwise) before any ``/scale`` write, and a tick whose audit write fails, or that cannot
read its policies, does not act (its report says ``audited=False``).
Policies are isolated from each other: a target that cannot be read is audited as a
failed decision for that policy, and the others go on.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from pdscaler.control.ports import (
    Actuator,
    Forecaster,
    HistorySource,
    Leadership,
    MetricsSource,
    TickObserver,
)
from pdscaler.control.restore import rebuild, reconcile
from pdscaler.control.training import (
    TRAIN_LOOKBACK,
    changed_models,
    seed_from_history,
    warming,
)
from pdscaler.domain.clock import Clock
from pdscaler.domain.decision import DecisionRecord, DecisionStatus, TargetRef, TickSummary
from pdscaler.domain.errors import Conflict, PdscalerError
from pdscaler.domain.policy import (
    ForecastModel,
    ForecastSpec,
    MetricType,
    Mode,
    Policy,
    Role,
    ScaleTargetRef,
)
from pdscaler.domain.profile import PerfProfile
from pdscaler.domain.signals import (
    PoolKey,
    PoolQuery,
    PoolSignals,
    Quality,
    ScaleState,
    SeriesKey,
    Signal,
    SignalName,
)
from pdscaler.domain.versioning import StoredPolicy
from pdscaler.engine.decide import PairDecision, PoolDecision, PoolInput, decide
from pdscaler.engine.history import PoolHistory
from pdscaler.store.decisions import DecisionStore, Outcome
from pdscaler.store.forecasts import ForecastModelStore
from pdscaler.store.policies import PolicyStore

log = logging.getLogger(__name__)

# Signals forecast at the horizon and offered to the capacity model.
FORECAST = (
    SignalName.ARRIVAL_RATE,
    SignalName.INPUT_TOKEN_RATE,
    SignalName.OUTPUT_TOKEN_RATE,
    SignalName.MEAN_INPUT_LENGTH,
    SignalName.MEAN_OUTPUT_LENGTH,
)
# Long enough for any stabilization window or rate-policy period HPA allows.
HISTORY_KEEP = timedelta(seconds=3600)


@dataclass
class TickReport:
    at: datetime
    policies: int = 0
    decisions: int = 0
    writes: int = 0
    failures: int = 0
    audited: bool = True  # False: its policies or decision rows hit a database error
    source_failed: bool = False  # the metrics source raised
    actuations: Counter[str] = field(default_factory=Counter)  # writes by HTTP status
    applied: list[DecisionRecord] = field(default_factory=list)  # written successfully


@dataclass
class _Planned:
    """One pool's decision in a tick, on its way to the audit log and the target."""

    policy: Policy
    version: int
    role: Role
    record: DecisionRecord
    decision: PoolDecision | None
    state: ScaleState | None
    act: bool


@dataclass
class ControllerConfig:
    interval: timedelta
    max_sample_age_s: float
    identity: str = "pdscaler"
    namespaces: frozenset[str] = frozenset()  # the policies this loop runs (empty: all)
    profile_for: Callable[[str | None], PerfProfile | None] = field(default=lambda _: None)
    # What an error text goes through before it is written to a decision row: the secrets
    # of the settings masked (see pdscaler.logs). By default, nothing.
    redact: Callable[[str], str] = field(default=lambda text: text)
    # The forecaster a policy's spec.forecast names (None: no forecast); None: one for all.
    forecaster_for: Callable[[ForecastSpec], Forecaster | None] | None = None


class Controller:
    def __init__(
        self,
        *,
        policies: PolicyStore,
        decisions: DecisionStore,
        metrics: MetricsSource,
        actuator: Actuator,
        forecaster: Forecaster,
        clock: Clock,
        config: ControllerConfig,
        leadership: Leadership | None = None,
        history_source: HistorySource | None = None,
        forecast_models: ForecastModelStore | None = None,
        observers: Sequence[TickObserver] = (),
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        """``history_source``: where forecasts are trained from at start-up (None: they
        learn live only); ``forecast_models``: where what each series was forecast with
        is recorded after every fit (None: not recorded); ``observers`` are told what
        each tick did (its metrics, Grafana annotations); ``timer`` times ticks."""
        self._policies = policies
        self._decisions = decisions
        self._metrics = metrics
        self._actuator = actuator
        self._forecaster = forecaster
        self._forecasters: dict[tuple[ForecastModel, float], Forecaster | None] = {}
        self._clock = clock
        self._config = config
        self._leadership = leadership
        self._history_source = history_source
        self._forecast_models = forecast_models
        self._recorded_fits: dict[SeriesKey, object] = {}  # the fit last recorded per series
        self._observers = tuple(observers)
        self._timer = timer
        # Windows run on steady time: wall time at start-up, moved on by the monotonic
        # clock, so that a wall-clock step (NTP, a VM resumed) neither stretches nor cuts
        # a stabilization window. Rows record wall time; ``_offset`` is steady - wall.
        self._anchor = (clock.now(), clock.monotonic())
        self._offset = timedelta(0)
        self._history: dict[PoolKey, PoolHistory] = {}
        self.last_tick: TickReport | None = None

    def history(self, key: PoolKey) -> PoolHistory:
        return self._history.get(key, PoolHistory())

    def restore(self, now: datetime | None = None) -> int:
        """Reconcile the decisions a crash left pending, then rebuild stabilization and
        rate-policy history from the decision log."""
        wall = now or self._clock.now()
        rows = self._decisions.recent(wall - HISTORY_KEEP)
        offset = (now or self.steady_now()) - wall
        if abs(offset) >= STEP:  # rows are in wall time, the history in steady time
            rows = [replace(r, decided_at=r.decided_at + offset) for r in rows]
        outcomes = reconcile(rows, self._read_replicas)
        if outcomes:
            try:
                self._decisions.finish_many(outcomes, now=self._clock.now())
                log.warning("reconciled %d decisions left pending: %s", len(outcomes),
                            ", ".join(f"{o.tick_id}/{o.role.value} {o.status.value}"
                                      for o in outcomes))  # fmt: skip
                done: dict[tuple[str | None, str], str] = {
                    (o.tick_id, o.role.value): o.status.value for o in outcomes
                }
                rows = [replace(r, status=done.get((r.tick_id, r.role), r.status)) for r in rows]
            except PdscalerError as e:  # they stay pending: counted as unknown writes
                log.error("could not record %d reconciled decisions: %s", len(outcomes), e)
        self._history = rebuild(rows, HISTORY_KEEP)
        return len(self._history)

    def _read_replicas(self, pool: PoolKey) -> int | None:
        """The size a pool's target runs now; None when it cannot be read."""
        try:
            policy = self._policies.get(pool.namespace, pool.policy).policy
            target = policy.spec.pool(pool.role).scale_target_ref
            return self._actuator.read_scale(pool.namespace, target).spec_replicas
        except Exception as e:  # unknown: the decision stays pending
            log.warning("%s: cannot read its target to reconcile: %s", pool, e)
            return None

    def _run_policies(self) -> list[StoredPolicy]:
        policies = self._policies.all()
        if self._config.namespaces:
            policies = [
                p for p in policies if p.policy.metadata.namespace in self._config.namespaces
            ]
        return policies

    def steady_now(self) -> datetime:
        """Wall time at start-up plus the monotonic time since: the windows' time."""
        wall, monotonic = self._anchor
        return wall + timedelta(seconds=self._clock.monotonic() - monotonic)

    def tick(self, now: datetime | None = None) -> TickReport:
        """One tick at ``now`` (by default: the steady time, with rows at wall time)."""
        started = self._timer()
        wall = now or self._clock.now()
        now = now or self.steady_now()
        self._offset = now - wall
        report = TickReport(at=wall)
        planned = self._tick(report, now)
        self._tell(report, planned, self._timer() - started)
        return report

    def _tick(self, report: TickReport, now: datetime) -> list[_Planned]:
        try:
            policies = self._run_policies()
        except PdscalerError as e:  # the database is down: nothing can be audited
            log.error("cannot read the policies, not acting this tick: %s", e)
            report.audited = False
            self.last_tick = report
            return []
        report.policies = len(policies)
        states = {p.policy.key: self._read(p.policy) for p in policies}
        observed = self._observe(
            [
                p.policy
                for p in policies
                if p.policy.spec.mode is not Mode.PAUSED
                and not isinstance(states[p.policy.key], PdscalerError)
            ],
            now - self._offset,
            report,
        )
        if abs(self._offset) >= STEP:  # samples are stamped in wall time: onto steady time
            observed = {key: _shifted(signals, self._offset) for key, signals in observed.items()}
        planned: list[_Planned] = []
        for stored in policies:
            planned += self._plan(
                stored.policy, stored.version, states[stored.policy.key], observed, now
            )
        report.decisions = len(planned)
        try:
            self._decisions.record_many([p.record for p in planned])
        except PdscalerError as e:
            log.error("audit write failed, not acting this tick: %s", e)
            report.audited = False
            self.last_tick = report
            return planned
        self._act(planned, now, report)
        self.last_tick = report
        return planned

    def _tell(self, report: TickReport, planned: list[_Planned], duration_s: float) -> None:
        """Tell the observers what the tick did; one that fails is logged, not the tick's."""
        if not self._observers:
            return
        summary = TickSummary(
            at=report.at,
            duration_s=duration_s,
            records=tuple(p.record for p in planned),
            applied=tuple(report.applied),
            actuations=dict(report.actuations),
            source_failed=report.source_failed,
            slos={p.policy.key: (p.policy.spec.slo.ttft_ms, p.policy.spec.slo.itl_ms)
                  for p in planned},
        )  # fmt: skip
        for observer in self._observers:
            try:
                observer.tick_done(summary)
            except Exception:
                log.exception("a tick observer failed")

    def _read(self, policy: Policy) -> dict[Role, ScaleState] | PdscalerError:
        try:
            return {
                role: self._actuator.read_scale(
                    policy.metadata.namespace, policy.spec.pool(role).scale_target_ref
                )
                for role in Role
            }
        except PdscalerError as e:
            log.warning("policy %s/%s: cannot read its targets: %s", *policy.key, e,
                        extra=_log_fields(policy))  # fmt: skip
            return e
        except Exception as e:  # an actuator bug must not stop the other policies
            log.exception("policy %s/%s: reading its targets failed", *policy.key,
                          extra=_log_fields(policy))  # fmt: skip
            return PdscalerError(f"{type(e).__name__}: {e}")

    def _observe(
        self, policies: Sequence[Policy], now: datetime, report: TickReport
    ) -> Mapping[PoolKey, PoolSignals]:
        queries = [PoolQuery.of(p, role) for p in policies for role in Role]
        if not queries:
            return {}
        try:
            return self._metrics.observe(queries, now)
        except Exception as e:  # any failure of the source: every signal is graded 'error'
            log.error("metrics source failed: %s", e)
            report.source_failed = True
            error = Signal.missing(Quality.ERROR)
            return {q.key: PoolSignals(dict.fromkeys(SignalName, error)) for q in queries}

    def _plan(
        self,
        policy: Policy,
        version: int,
        states: dict[Role, ScaleState] | PdscalerError,
        observed: Mapping[PoolKey, PoolSignals],
        now: datetime,
    ) -> list[_Planned]:
        tick_id = str(uuid.uuid4())
        if isinstance(states, PdscalerError):
            return [self._unreadable(policy, version, role, states, tick_id, now) for role in Role]
        try:
            inputs = {role: self._input(policy, role, states[role], observed, now) for role in Role}
            pair = decide(
                policy.spec,
                inputs[Role.PREFILL],
                inputs[Role.DECODE],
                now,
                max_sample_age_s=self._config.max_sample_age_s,
            )
        except Exception as e:  # a bad profile, a bug: this policy fails, the others go on
            log.exception("policy %s/%s: deciding failed", *policy.key,
                          extra=_log_fields(policy, tick_id=tick_id))  # fmt: skip
            error = PdscalerError(f"deciding failed: {type(e).__name__}: {e}")
            return [
                self._unreadable(policy, version, role, error, tick_id, now, states[role])
                for role in Role
            ]
        return [
            self._planned(policy, version, tick_id, pair, role, states[role], inputs[role], now)
            for role in Role
        ]

    def _input(
        self,
        policy: Policy,
        role: Role,
        state: ScaleState,
        observed: Mapping[PoolKey, PoolSignals],
        now: datetime,
    ) -> PoolInput:
        key = _key(policy, role)
        signals = observed.get(key, PoolSignals())
        horizon_s = policy.spec.cold_start_seconds + self._config.interval.total_seconds()
        forecast: dict[SignalName, float] = {}
        forecaster = self._forecaster_for(policy.spec.forecast)
        # a pool whose replicas are all still starting serves nothing: its zeros are not
        # the load offered, and not learned (see control.training)
        learn = not warming(state.ready_replicas, state.pending_replicas)
        for name in FORECAST if forecaster is not None else ():
            assert forecaster is not None
            signal = signals.get(name)
            if (
                learn
                and signal.value is not None
                and signal.usable(now, self._config.max_sample_age_s)
            ):
                forecaster.update((key, name), now, signal.value)
            predicted = forecaster.predict((key, name), now, horizon_s)
            if predicted is not None:
                forecast[name] = predicted
        capacity = next(
            (m for m in policy.spec.pool(role).metrics if m.type is MetricType.CAPACITY), None
        )
        profile = self._config.profile_for(capacity.profile) if capacity else None
        return PoolInput(state, signals, self.history(key), profile, forecast or None)

    def refit_forecasts(self, budget_s: float) -> int:
        """Fit the forecasts that are due, within ``budget_s``: the scheduler's forecast job,
        beside the tick, never in it (a tick only predicts)."""
        now = self.steady_now()
        forecasters = {id(f): f for f in (self._forecaster, *self._forecasters.values()) if f}
        fitted = 0
        for forecaster in forecasters.values():
            fitted += forecaster.refit(now, budget_s=budget_s)
        if fitted:  # a model changes only with a fit or a choice
            self._record_forecast_models(self._clock.now())
        return fitted

    def train_forecasts(self, lookback: timedelta = TRAIN_LOOKBACK) -> int:
        """Give the forecasters the last ``lookback`` of their signals' history, from the
        history source (the forecast job does it at start-up). Returns the values taken."""
        if self._history_source is None:
            return 0
        now = self._clock.now()
        plans = [
            (p.policy, f)
            for p in self._run_policies()
            if p.policy.spec.mode is not Mode.PAUSED
            and (f := self._forecaster_for(p.policy.spec.forecast)) is not None
        ]
        if not plans:
            return 0
        start = now - lookback
        return seed_from_history(self._history_source, plans, FORECAST, start, now,
                                 step=self._config.interval,
                                 warming_ticks=self._decisions.warming(start),
                                 shift=self.steady_now() - now)  # fmt: skip

    def _record_forecast_models(self, now: datetime) -> None:
        """Record the model of each series whose fit (or choice) changed since last time."""
        if self._forecast_models is None:
            return
        plans = [(p.policy, f) for p in self._run_policies()
                 if (f := self._forecaster_for(p.policy.spec.forecast)) is not None]  # fmt: skip
        records = changed_models(plans, FORECAST, self._recorded_fits, now)
        try:
            self._forecast_models.record(records)
        except PdscalerError as e:  # recorded at the next fit
            log.warning("recording forecast models failed: %s", e)
            for record in records:
                self._recorded_fits.pop((record.pool, SignalName(record.signal)), None)

    def _forecaster_for(self, spec: ForecastSpec) -> Forecaster | None:
        """The policy's forecaster: one per model and quantile, shared by the policies that
        name it (each series is its own). Without a chooser, the one given for all."""
        choose = self._config.forecaster_for
        if choose is None:
            return self._forecaster
        key = (spec.model, spec.quantile)
        if key not in self._forecasters:
            self._forecasters[key] = choose(spec)
        return self._forecasters[key]

    def _planned(
        self,
        policy: Policy,
        version: int,
        tick_id: str,
        pair: PairDecision,
        role: Role,
        state: ScaleState,
        inputs: PoolInput,
        now: datetime,
    ) -> _Planned:
        decision = pair.pool(role)
        act = decision.desired_replicas != state.spec_replicas and policy.spec.mode is Mode.ACTIVE
        record = DecisionRecord(
            **self._about(policy, version, role, tick_id, now),
            desired_replicas=decision.desired_replicas,
            current_replicas=state.spec_replicas,
            ready_replicas=state.ready_replicas,
            pending_replicas=state.pending_replicas,
            raw_recommendation=decision.recommendation,
            steps=decision.steps,
            signals=_shifted(inputs.signals, -self._offset).audit()
            if abs(self._offset) >= STEP
            else inputs.signals.audit(),
            forecast=self._forecast_audit(policy, role, inputs, decision),
            status=DecisionStatus.PENDING if act else DecisionStatus.SKIPPED,
            resource_version=state.resource_version,
        )
        return _Planned(policy, version, role, record, decision, state, act)

    def _forecast_audit(
        self, policy: Policy, role: Role, inputs: PoolInput, decision: PoolDecision
    ) -> dict[str, Any] | None:
        """The forecast values at the horizon, how the arrival rate's was made, and the
        capacity model's replicas for the load now and for the forecast: which one won."""
        if not inputs.forecast:
            return None
        forecaster = self._forecaster_for(policy.spec.forecast)
        horizon_s = policy.spec.cold_start_seconds + self._config.interval.total_seconds()
        about = dict(forecaster.describe((_key(policy, role), SignalName.ARRIVAL_RATE))
                     if forecaster else {})  # fmt: skip
        audit = {**{k.value: v for k, v in inputs.forecast.items()},
                 "model": about.pop("model", None), "horizonS": horizon_s,
                 "fallback": about.get("fallback"),
                 "recentMae": about.get("recentMae")}  # fmt: skip
        if decision.floor is not None:
            audit["reactiveReplicas"] = round(decision.floor.reactive, 3)
            audit["floorReplicas"] = round(decision.floor.predictive, 3)
            audit["won"] = "forecast" if decision.forecast_won else "reactive"
        return audit

    def _about(
        self, policy: Policy, version: int, role: Role, tick_id: str, now: datetime
    ) -> dict[str, Any]:
        """What every decision record says of the policy, the pool and this replica."""
        return {
            "tick_id": tick_id,
            "decided_at": now - self._offset,  # wall time
            "policy_namespace": policy.metadata.namespace,
            "policy_name": policy.metadata.name,
            "policy_version": version,
            "role": role,
            "target": _target(policy, role),
            "mode": policy.spec.mode,
            "leader_identity": self._config.identity,
        }

    def _unreadable(
        self,
        policy: Policy,
        version: int,
        role: Role,
        error: PdscalerError,
        tick_id: str,
        now: datetime,
        state: ScaleState | None = None,
    ) -> _Planned:
        """A failed row for a pool that could not be read, or not be decided."""
        record = DecisionRecord(
            **self._about(policy, version, role, tick_id, now),
            desired_replicas=None,
            current_replicas=state.spec_replicas if state else None,
            ready_replicas=state.ready_replicas if state else None,
            pending_replicas=state.pending_replicas if state else None,
            status=DecisionStatus.FAILED,
            error=self._config.redact(f"{error.code}: {error.message}"),
        )
        return _Planned(policy, version, role, record, None, None, act=False)

    def _act(self, planned: list[_Planned], now: datetime, report: TickReport) -> None:
        outcomes: list[Outcome] = []
        for item in planned:
            if item.decision is not None:
                self._history[_key(item.policy, item.role)] = item.decision.history
            if item.record.status is DecisionStatus.FAILED:
                report.failures += 1
            if not item.act:
                continue
            outcomes.append(self._write(item, now, report))
        try:
            self._decisions.finish_many(outcomes, now=self._clock.now())
        except PdscalerError as e:
            # The writes happened; their rows stay 'pending' until reconciled at start-up.
            log.error("could not record %d outcomes: %s", len(outcomes), e)

    def _write(self, item: _Planned, now: datetime, report: TickReport) -> Outcome:
        assert item.decision is not None
        assert item.state is not None
        tick_id, role = item.record.tick_id, item.role
        namespace = item.policy.metadata.namespace
        target = item.policy.spec.pool(item.role).scale_target_ref
        desired = item.decision.desired_replicas
        if self._leadership is not None and not self._leadership.confirm():
            report.failures += 1
            return Outcome(tick_id, role, DecisionStatus.FAILED,
                           "NotLeader: this replica no longer holds the lease")  # fmt: skip
        if desired < item.state.spec_replicas and item.state.selector:
            self._prefer_removal(item, namespace, target, item.state.selector, now)
        try:
            version = self._actuator.write_scale(
                namespace, target, desired, item.state.resource_version
            )
        except Exception as e:
            report.actuations[_http_status(e)] += 1
            return self._failed_write(item, e, report)
        report.actuations["200"] += 1
        report.applied.append(item.record)
        report.writes += 1
        key = _key(item.policy, item.role)
        self._history[key] = self.history(key).with_scale(
            now, item.state.spec_replicas, desired, HISTORY_KEEP
        )
        return Outcome(tick_id, role, DecisionStatus.APPLIED, resource_version_written=version)

    def _failed_write(self, item: _Planned, error: Exception, report: TickReport) -> Outcome:
        tick_id, role = item.record.tick_id, item.role
        if isinstance(error, Conflict):  # re-read and re-decided next tick
            return Outcome(tick_id, role, DecisionStatus.CONFLICT, self._why(error))
        report.failures += 1
        where = (
            f"{item.policy.metadata.namespace}/{item.policy.spec.pool(role).scale_target_ref.name}"
        )
        if isinstance(error, PdscalerError):
            log.warning("scale of %s failed: %s", where, error,
                        extra=_log_fields(item.policy, role, tick_id))  # fmt: skip
            return Outcome(tick_id, role, DecisionStatus.FAILED, self._why(error))
        # an actuator bug: audited as a failure, the tick goes on
        log.error("scale of %s failed", where, exc_info=error,
                  extra=_log_fields(item.policy, role, tick_id))  # fmt: skip
        return Outcome(tick_id, role, DecisionStatus.FAILED, self._why(error))

    def _why(self, error: Exception) -> str:
        """A failed write's error as its row says it: the code and message, secrets out."""
        if isinstance(error, PdscalerError):
            return self._config.redact(f"{error.code}: {error.message}")
        return self._config.redact(f"{type(error).__name__}: {error}")

    def _prefer_removal(
        self,
        item: _Planned,
        namespace: str,
        target: ScaleTargetRef,
        selector: str,
        now: datetime,
    ) -> None:
        """Drain-aware scale-down, best effort: a failure here does not hold the write."""
        try:
            load = self._metrics.pod_load(PoolQuery.of(item.policy, item.role), now - self._offset)
            marked = self._actuator.prefer_removal(namespace, target, selector, load)
        except Exception as e:  # the scale-down goes on; the ReplicaSet picks its own victims
            log.warning("could not mark the least-loaded pods of %s/%s: %s",
                        namespace, target.name, e,
                        extra=_log_fields(item.policy, item.role, item.record.tick_id))  # fmt: skip
            return
        if marked:
            log.info("%s/%s: marked %d pods by load before scaling down",
                     namespace, target.name, marked,
                     extra=_log_fields(item.policy, item.role, item.record.tick_id))  # fmt: skip


# What a failed /scale write's error says the API server answered (see ActuationError).
_STATUS_OF = {"NotFound": "404", "Forbidden": "403", "Unauthenticated": "401",
              "Conflict": "409", "InvalidInput": "422", "Unavailable": "503"}  # fmt: skip


def _http_status(error: Exception) -> str:
    """The HTTP status of a failed write, as a label: ``error`` when none was answered."""
    status = getattr(error, "status", None)
    if isinstance(status, int):
        return str(status)
    code = error.code if isinstance(error, PdscalerError) else ""
    return _STATUS_OF.get(code, "error")


def _log_fields(
    policy: Policy, role: Role | None = None, tick_id: str | None = None
) -> dict[str, str]:
    """A log line's correlation fields (see pdscaler.logs): the policy, and the pool and
    the tick's decision rows when the line is about them."""
    fields = {"namespace": policy.metadata.namespace, "policy": policy.metadata.name}
    if role is not None:
        fields["role"] = role.value
    if tick_id is not None:
        fields["tick_id"] = tick_id
    return fields


# A difference of steady and wall time this large is a step of the wall clock, not drift.
STEP = timedelta(seconds=1)


def _shifted(signals: PoolSignals, by: timedelta) -> PoolSignals:
    """``signals`` with their sample times moved ``by``."""
    return PoolSignals({
        name: s if s.sampled_at is None else replace(s, sampled_at=s.sampled_at + by)
        for name, s in signals.signals.items()
    })  # fmt: skip


def _key(policy: Policy, role: Role) -> PoolKey:
    return PoolKey(policy.metadata.namespace, policy.metadata.name, role)


def _target(policy: Policy, role: Role) -> TargetRef:
    ref = policy.spec.pool(role).scale_target_ref
    return TargetRef(ref.api_version, ref.kind, ref.name)

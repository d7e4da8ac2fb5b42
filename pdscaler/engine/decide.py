"""``decide``: one policy's prefill and decode pools, from signals to desired replicas.

Per pool, in this order (each step records its value, reason code and message):

1. ``mode``        paused policies, and changes made by someone else, hold here;
2. ``recommend``   each metric votes (target tracking with HPA's tolerance, the queue-aware
                   capacity model, latency over the SLO); the highest vote wins;
3. ``gate``        the metric-quality gate: unusable metrics never cause a scale-down;
4. ``slo``         measured TTFT/ITL over the SLO forbids a scale-down, far over forces growth;
5. ``consolidate`` a scale-down must leave the survivors under target (no 2<->1 flapping);
   -- the value so far is the pool's recommendation, kept in its history --
6. ``stabilize``   HPA stabilization windows, then ``panic``: during a burst (Knative's
                   panic mode) no scale-down;
7. ``limit``       HPA rate policies, then minReplicas/maxReplicas;
8. ``schedule``    replicas that cannot be placed hold a scale-up.

Then for the pair: 9. ``ratio`` (prefill:decode band), 10. ``budget`` (shared GPUs), and
11. ``pause`` (a paused direction). Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from pdscaler.domain.decision import Step
from pdscaler.domain.policy import (
    ExternalChangeAction,
    MetricType,
    Mode,
    PolicySpec,
    PoolSpec,
    Role,
)
from pdscaler.domain.profile import PerfProfile
from pdscaler.domain.reasons import Reason
from pdscaler.domain.signals import PoolSignals, Quality, ScaleState, SignalName
from pdscaler.engine.coordinate import Bounds, Pair, coordinate_budget, coordinate_ratio
from pdscaler.engine.gate import gate_recommendation
from pdscaler.engine.guard import (
    consolidate,
    consolidation_floor,
    guard_slo,
    hold_unplaceable,
)
from pdscaler.engine.history import PoolHistory, Recommendation
from pdscaler.engine.limits import RateBounds, limit_replicas, rate_bounds
from pdscaler.engine.recommend import TOTALS, Floor, PoolView, latency_settled, vote
from pdscaler.engine.stabilize import stabilize_recommendation


@dataclass(frozen=True)
class PoolInput:
    state: ScaleState
    signals: PoolSignals
    history: PoolHistory
    profile: PerfProfile | None = None
    forecast: Mapping[SignalName, float] | None = None


@dataclass(frozen=True)
class PoolDecision:
    role: Role
    current_replicas: int
    desired_replicas: int
    recommendation: int | None  # what stabilization started from (None: held before it)
    steps: tuple[Step, ...]
    history: PoolHistory
    rate: RateBounds | None = None  # what the rate policies allowed (None: held before them)
    floor: Floor | None = None  # the capacity model's reactive and predictive replicas

    @property
    def reason(self) -> str:
        return self.steps[-1].reason if self.steps else ""

    @property
    def forecast_won(self) -> bool:
        """Whether the predictive floor was the recommendation (beat every other vote)."""
        return any(s.name == "recommend" and s.reason == Reason.FORECAST_FLOOR for s in self.steps)


@dataclass(frozen=True)
class PairDecision:
    prefill: PoolDecision
    decode: PoolDecision

    def pool(self, role: Role) -> PoolDecision:
        return self.prefill if role is Role.PREFILL else self.decode


def decide(
    spec: PolicySpec,
    prefill: PoolInput,
    decode: PoolInput,
    now: datetime,
    *,
    max_sample_age_s: float,
) -> PairDecision:
    """Decide both pools of one policy at ``now``."""
    # What the prefill pool finishes now, the decode pool must carry next.
    handed_over = _usable(prefill, SignalName.ARRIVAL_RATE, now, max_sample_age_s)
    pools = {
        Role.PREFILL: decide_pool(spec, Role.PREFILL, prefill, now,
                                  max_sample_age_s=max_sample_age_s),
        Role.DECODE: decide_pool(spec, Role.DECODE, decode, now,
                                 max_sample_age_s=max_sample_age_s, incoming_per_s=handed_over),
    }  # fmt: skip
    if spec.mode is Mode.PAUSED:
        return PairDecision(pools[Role.PREFILL], pools[Role.DECODE])
    return _coordinate(spec, pools[Role.PREFILL], pools[Role.DECODE], now)


def decide_pool(
    spec: PolicySpec,
    role: Role,
    inputs: PoolInput,
    now: datetime,
    *,
    max_sample_age_s: float,
    incoming_per_s: float | None = None,
) -> PoolDecision:
    pool = spec.pool(role)
    current = inputs.state.spec_replicas
    held = _hold(spec, inputs, now)
    if held is not None:
        step, history = held
        return PoolDecision(role, current, step.value, None, (step,), history)
    view = PoolView.of(
        role,
        pool,
        spec.slo,
        inputs.state,
        inputs.signals,
        now,
        max_sample_age_s,
        inputs.profile,
        inputs.forecast,
        spec.cold_start_seconds,
        incoming_per_s,
        _backlog_growth(inputs, now),
    )
    recommended, capacity = _recommend(view)
    steps = [s for s in (_outside_change(spec, inputs), recommended) if s is not None]
    # Latency metrics only ever ask for more; that they are NaN with no traffic must not
    # hold a pool up. They count for the gate only where nothing else sizes the pool.
    sizing = [m for m in pool.metrics if m.type not in LATENCY] or pool.metrics
    usable = sum(1 for m in sizing if m.type in view.usable_types)
    recommendation = recommended.value if recommended.reason != Reason.NO_RECOMMENDATION else None
    gate = gate_recommendation(
        recommendation,
        current,
        usable,
        len(sizing),
        inputs.history.metric_failures,
        pool.fallback,
    )
    steps.append(gate.step)
    measured = view.value(SignalName.TTFT_MS if role is Role.PREFILL else SignalName.ITL_MS)
    slo_ms = spec.slo.ttft_ms if role is Role.PREFILL else spec.slo.itl_ms
    margin = spec.slo.guard_margin
    # Whether the latency is settled matters only where the guard would force a step.
    breached = measured is not None and slo_ms is not None and measured > slo_ms * (1 + margin)
    settled = breached and latency_settled(view)
    _append(steps, guard_slo(steps[-1].value, current, measured, slo_ms, margin,
                             arriving=inputs.state.pending_replicas, settled=settled))  # fmt: skip
    floor = consolidation_floor(_loads(view), pool.scale_down_rules.tolerance or 0.0)
    _append(steps, consolidate(steps[-1].value, current, floor))
    queued = view.value(SignalName.QUEUED_PREFILL_TOKENS)
    backlog = (now, queued) if queued is not None else None
    return _stabilize_and_limit(spec, role, inputs, steps, now, gate.failures, backlog, capacity)


LATENCY = frozenset({MetricType.TTFT, MetricType.ITL})


def _backlog_growth(inputs: PoolInput, now: datetime) -> float:
    """Queued prefill tokens gained per second since the last tick (0 if it shrank): what
    arrives beyond what the pool completes, which its completion rate cannot show."""
    last = inputs.history.backlog
    signal = inputs.signals.get(SignalName.QUEUED_PREFILL_TOKENS)
    if last is None or signal.value is None or signal.quality is not Quality.FRESH:
        return 0.0
    elapsed = (now - last[0]).total_seconds()
    return max(signal.value - last[1], 0.0) / elapsed if elapsed > 0 else 0.0


def _usable(inputs: PoolInput, name: SignalName, now: datetime, max_age_s: float) -> float | None:
    """A fresh signal's value, or its forecast at the horizon when that is higher."""
    signal = inputs.signals.get(name)
    if not signal.usable(now, max_age_s) or signal.value is None:
        return None
    predicted = (inputs.forecast or {}).get(name)
    return signal.value if predicted is None else max(signal.value, predicted)


def _hold(spec: PolicySpec, inputs: PoolInput, now: datetime) -> tuple[Step, PoolHistory] | None:
    """A pool that is paused, or whose size someone else just changed, holds."""
    current, history = inputs.state.spec_replicas, inputs.history
    if spec.mode is Mode.PAUSED:
        return Step("mode", current, Reason.PAUSED, "policy is paused"), history
    if inputs.state.managed_by and spec.mode is Mode.ACTIVE:
        message = (f"{inputs.state.managed_by} also scales this target: pdscaler does not act "
                   "on it (remove that autoscaler, or run this policy in shadow)")  # fmt: skip
        return Step("mode", current, Reason.MANAGED_ELSEWHERE, message), history
    if spec.mode is Mode.SHADOW or history.last_applied in (None, current):
        return None
    since = history.external_since or now
    history = replace(history, external_since=since)
    message = f"target runs {current}, pdscaler last set {history.last_applied}"
    changes = spec.external_changes
    respect = timedelta(seconds=changes.respect_seconds)
    if changes.action is ExternalChangeAction.RESPECT and now - since < respect:
        until = (since + respect).isoformat()
        step = Step(
            "mode", current, Reason.EXTERNAL_CHANGE_RESPECTED, f"{message}; held until {until}"
        )
        return step, history
    # Reconciling, or the respect period is over: decide as usual from the outside size.
    return None


def _outside_change(spec: PolicySpec, inputs: PoolInput) -> Step | None:
    """A size pdscaler did not set. In shadow mode pdscaler sets nothing: it only watches."""
    current, last = inputs.state.spec_replicas, inputs.history.last_applied
    if spec.mode is Mode.SHADOW or last is None or last == current:
        return None
    action = spec.external_changes.action
    return Step("mode", current, Reason.EXTERNAL_CHANGE,
                f"target runs {current}, pdscaler last set {last}; {action}")  # fmt: skip


def _recommend(view: PoolView) -> tuple[Step, Floor | None]:
    votes = [v for v in (vote(view, m) for m in view.pool.metrics) if v is not None]
    if not votes:
        step = Step(
            "recommend", view.state.spec_replicas, Reason.NO_RECOMMENDATION, "no metric could vote"
        )
        return step, None
    best = max(votes, key=lambda v: v.replicas)
    others = ", ".join(f"{v.metric.value}={v.replicas}" for v in votes if v is not best)
    message = best.message + (f" (others: {others})" if others else "")
    floor = next((v.floor for v in votes if v.floor is not None), None)
    return Step("recommend", best.replicas, best.reason, message), floor


def _loads(view: PoolView) -> list[tuple[float, float]]:
    loads = []
    for metric in view.pool.metrics:
        if metric.type in TOTALS and view.usable(metric) and metric.target_per_replica:
            loads.append((view.value(TOTALS[metric.type]) or 0.0, metric.target_per_replica))
        elif metric.type is MetricType.KV_CACHE_UTILIZATION and view.usable(metric):
            utilization = view.value(SignalName.KV_CACHE_UTILIZATION) or 0.0
            base = view.state.ready_replicas or view.state.spec_replicas
            loads.append((utilization * base, metric.target or 1.0))
    return loads


def _stabilize_and_limit(
    spec: PolicySpec,
    role: Role,
    inputs: PoolInput,
    steps: list[Step],
    now: datetime,
    failures: int,
    backlog: tuple[datetime, float] | None,
    capacity: Floor | None,
) -> PoolDecision:
    pool = spec.pool(role)
    current = inputs.state.spec_replicas
    recommendation = steps[-1].value
    up, down = pool.scale_up_rules, pool.scale_down_rules
    up_window, down_window, keep = pool.windows
    history = inputs.history
    if not history.recommendations:
        # No memory yet (a new policy, or none in the log): as HPA does, the scale-down
        # window starts out holding the size the pool runs, so a first look at a quiet
        # moment does not shrink it at once.
        history = replace(history, recommendations=(Recommendation(now, current),))
    steps.append(
        stabilize_recommendation(
            recommendation, current, history.recommendations, now, up_window, down_window
        )
    )
    panic_until = _panic_until(spec, inputs, recommendation, now)
    _append(steps, _panic(steps[-1].value, current, panic_until, now))
    rate = rate_bounds(current, history.scale_events, up, down, now)
    steps.append(
        limit_replicas(steps[-1].value, current, pool.min_replicas, pool.max_replicas, rate)
    )
    _append(steps, hold_unplaceable(steps[-1].value, current, inputs.state.unschedulable))
    if inputs.state.unschedulable:  # coordination may not grow the pool either
        rate = rate._replace(highest=None)
    # The size the target runs now is known and accepted from here on: a later difference
    # that pdscaler did not write is someone else's change.
    history = PoolHistory(
        recommendations=history.recommendations_after(
            now - keep, Recommendation(now, recommendation)
        ),
        scale_events=history.scale_events,
        metric_failures=failures,
        last_applied=current,
        backlog=backlog,
        panic_until=panic_until,
    )
    return PoolDecision(
        role, current, steps[-1].value, recommendation, tuple(steps), history, rate, capacity
    )


def _panic_until(
    spec: PolicySpec, inputs: PoolInput, recommendation: int, now: datetime
) -> datetime | None:
    """Until when the pool is in panic mode: a recommendation of ``threshold`` times the
    ready replicas (Knative's panic threshold) starts or extends a burst, which lasts
    ``windowSeconds`` past the last such recommendation."""
    until = inputs.history.panic_until
    threshold = spec.panic.threshold
    ready = max(inputs.state.ready_replicas, 1)  # as Knative: none ready counts as one
    if threshold is not None and recommendation >= threshold * ready:
        until = now + timedelta(seconds=spec.panic.window_seconds)
    return until if until is not None and until > now else None


def _panic(value: int, current: int, until: datetime | None, now: datetime) -> Step | None:
    if until is None or value >= current:
        return None
    return Step("panic", current, Reason.PANIC,
                f"burst: no scale-down until {until.isoformat()} (wanted {value})")  # fmt: skip


def _coordinate(
    spec: PolicySpec, prefill: PoolDecision, decode: PoolDecision, now: datetime
) -> PairDecision:
    current = Pair(prefill.current_replicas, decode.current_replicas)
    desired = Pair(prefill.desired_replicas, decode.desired_replicas)
    extra_p: list[Step] = []
    extra_d: list[Step] = []
    coordination = spec.coordination
    ratio = None
    if coordination.prefill_to_decode_ratio is not None:
        prefill_bounds = _bounds(spec.prefill, prefill)
        decode_bounds = _bounds(spec.decode, decode)
        ratio = coordinate_ratio(desired, current, prefill_bounds, decode_bounds, coordination)
    budget = coordinate_budget(
        ratio[0] if ratio else desired, current, spec.prefill, spec.decode, coordination
    )
    for result in (ratio, budget):
        if result is not None:
            desired, step_p, step_d = result
            extra_p.append(step_p)
            extra_d.append(step_d)
    _append(extra_p, _pause(spec, desired.prefill, current.prefill))
    _append(extra_d, _pause(spec, desired.decode, current.decode))
    return PairDecision(_extend(prefill, extra_p), _extend(decode, extra_d))


def _bounds(pool: PoolSpec, decision: PoolDecision) -> Bounds:
    """How far coordination may move a pool this tick: as far as its rate policies and
    min/max allow (and its own desired count); a pool that held, not at all."""
    current, desired, rate = decision.current_replicas, decision.desired_replicas, decision.rate
    if decision.recommendation is None or rate is None:
        return Bounds(current, current)
    highest = current if rate.highest is None else min(pool.max_replicas, rate.highest)
    lowest = current if rate.lowest is None else max(pool.min_replicas, rate.lowest)
    return Bounds(min(lowest, desired), max(highest, desired))


def _pause(spec: PolicySpec, value: int, current: int) -> Step | None:
    if spec.pause.scale_up and value > current:
        return Step("pause", current, Reason.SCALE_UP_PAUSED, "scale-up is paused")
    if spec.pause.scale_down and value < current:
        return Step("pause", current, Reason.SCALE_DOWN_PAUSED, "scale-down is paused")
    return None


def _extend(decision: PoolDecision, steps: list[Step]) -> PoolDecision:
    if not steps or decision.recommendation is None:
        return decision
    all_steps = decision.steps + tuple(steps)
    return PoolDecision(
        decision.role,
        decision.current_replicas,
        all_steps[-1].value,
        decision.recommendation,
        all_steps,
        decision.history,
        decision.rate,
        decision.floor,
    )


def _append(steps: list[Step], step: Step | None) -> None:
    if step is not None:
        steps.append(step)

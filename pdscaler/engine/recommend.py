"""Per-metric recommendations for one pool; the highest wins.

Each metric votes for a replica count, or abstains when a signal it needs is not usable
(the quality gate then decides what that means). Target tracking applies HPA's tolerance
band per metric: a usage ratio within ``tolerance`` of 1 votes for the current count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import NamedTuple

from pdscaler.domain.policy import MetricSpec, MetricType, PoolSpec, Role, Slo
from pdscaler.domain.profile import PerfProfile
from pdscaler.domain.reasons import Reason
from pdscaler.domain.signals import PoolSignals, Quality, ScaleState, SignalName
from pdscaler.engine.capacity import CapacityEstimate, decode_replicas, prefill_replicas

S = SignalName

# The signals each metric needs; a metric whose signals are not all usable abstains.
NEEDS: Mapping[tuple[MetricType, Role], tuple[SignalName, ...]] = {
    **{(MetricType.QUEUED_PREFILL_TOKENS, r): (S.QUEUED_PREFILL_TOKENS,) for r in Role},
    **{(MetricType.QUEUED_REQUESTS, r): (S.QUEUED_REQUESTS,) for r in Role},
    **{(MetricType.RUNNING_REQUESTS, r): (S.RUNNING_REQUESTS,) for r in Role},
    **{(MetricType.KV_CACHE_UTILIZATION, r): (S.KV_CACHE_UTILIZATION,) for r in Role},
    **{(MetricType.TTFT, r): (S.TTFT_MS,) for r in Role},
    **{(MetricType.ITL, r): (S.ITL_MS,) for r in Role},
    (MetricType.CAPACITY, Role.PREFILL): (
        S.ARRIVAL_RATE,
        S.MEAN_INPUT_LENGTH,
        S.QUEUED_PREFILL_TOKENS,
    ),
    (MetricType.CAPACITY, Role.DECODE): (
        S.OUTPUT_TOKEN_RATE,
        S.RUNNING_REQUESTS,
        S.MEAN_INPUT_LENGTH,
        S.MEAN_OUTPUT_LENGTH,
    ),
}
TOTALS = {
    MetricType.QUEUED_PREFILL_TOKENS: S.QUEUED_PREFILL_TOKENS,
    MetricType.QUEUED_REQUESTS: S.QUEUED_REQUESTS,
    MetricType.RUNNING_REQUESTS: S.RUNNING_REQUESTS,
}


class Floor(NamedTuple):
    """The capacity model's two numbers: replicas for the load now (reactive) and for the
    load forecast at the cold-start horizon (the predictive floor)."""

    reactive: float
    predictive: float


class Vote(NamedTuple):
    """One metric's replica count. Its words are written only if it wins."""

    metric: MetricType
    replicas: int
    reason: Reason
    describe: Callable[[], str]
    floor: Floor | None = None  # the capacity vote's numbers, when it had a forecast

    @property
    def message(self) -> str:
        return self.describe()


class PoolView(NamedTuple):  # a NamedTuple: built for every pool on every tick
    """What one pool's recommendation is computed from: only usable signal values."""

    role: Role
    pool: PoolSpec
    slo: Slo
    state: ScaleState
    values: Mapping[SignalName, float]
    usable_types: frozenset[MetricType]  # metrics whose signals are all usable
    profile: PerfProfile | None = None
    forecast: Mapping[SignalName, float] | None = None  # predicted at the horizon
    cold_start_s: float = 0.0  # how long a replica asked for takes to serve
    incoming_per_s: float | None = None  # decode: requests/s the prefill pool hands over
    backlog_growth: float = 0.0  # prefill: queued tokens gained per second lately

    @staticmethod
    def of(
        role: Role,
        pool: PoolSpec,
        slo: Slo,
        state: ScaleState,
        signals: PoolSignals,
        now: datetime,
        max_age_s: float,
        profile: PerfProfile | None = None,
        forecast: Mapping[SignalName, float] | None = None,
        cold_start_s: float = 0.0,
        incoming_per_s: float | None = None,
        backlog_growth: float = 0.0,
    ) -> PoolView:
        oldest = now - timedelta(seconds=max_age_s)
        fresh = Quality.FRESH
        values = {  # Signal.usable_after, inlined: this runs for every signal of every pool
            name: signal.value
            for name, signal in signals.signals.items()
            if signal.quality is fresh
            and signal.value is not None
            and signal.sampled_at is not None
            and signal.sampled_at >= oldest
        }
        usable = frozenset(
            m.type for m in pool.metrics if all(n in values for n in NEEDS[(m.type, role)])
        )
        return PoolView(
            role,
            pool,
            slo,
            state,
            values,
            usable,
            profile,
            forecast,
            cold_start_s,
            incoming_per_s,
            backlog_growth,
        )

    def value(self, name: SignalName) -> float | None:
        return self.values.get(name)

    def usable(self, metric: MetricSpec) -> bool:
        return metric.type in self.usable_types

    def expected(self, name: SignalName) -> float | None:
        """The observed value, or the forecast at the horizon when that is higher."""
        observed = self.value(name)
        predicted = (self.forecast or {}).get(name)
        if observed is None or predicted is None:
            return observed
        return max(observed, predicted)


def vote(view: PoolView, metric: MetricSpec) -> Vote | None:
    if not view.usable(metric):
        return None
    if metric.type in TOTALS:
        return _total_per_replica(view, metric)
    if metric.type is MetricType.KV_CACHE_UTILIZATION:
        return _average_utilization(view, metric)
    if metric.type in (MetricType.TTFT, MetricType.ITL):
        return _latency(view, metric)
    return _capacity(view, metric)


def _total_per_replica(view: PoolView, metric: MetricSpec) -> Vote:
    total = view.value(TOTALS[metric.type]) or 0.0
    target = metric.target_per_replica or 1.0
    current = view.state.spec_replicas
    ratio = total / (target * current) if current else math.inf
    if _within_tolerance(view, ratio):
        return Vote(metric.type, current, Reason.WITHIN_TOLERANCE, _ratio_words(ratio))
    replicas = math.ceil(total / target)
    return Vote(
        metric.type,
        replicas,
        Reason.TARGET_TRACKING,
        lambda: f"{metric.type} {total:g} / {target:g} per replica = {total / target:.2f}",
    )


def _average_utilization(view: PoolView, metric: MetricSpec) -> Vote:
    utilization = view.value(S.KV_CACHE_UTILIZATION) or 0.0
    target = metric.target or 1.0
    base = view.state.ready_replicas or view.state.spec_replicas
    ratio = utilization / target
    if _within_tolerance(view, ratio):
        return Vote(
            metric.type, view.state.spec_replicas, Reason.WITHIN_TOLERANCE, _ratio_words(ratio)
        )
    replicas = math.ceil(ratio * base)
    return Vote(
        metric.type,
        replicas,
        Reason.TARGET_TRACKING,
        lambda: f"KV {utilization:.2f} / target {target:.2f} x {base} ready = {ratio * base:.2f}",
    )


def _latency(view: PoolView, metric: MetricSpec) -> Vote | None:
    """Latency votes only to grow: proportionally to how far it is over the SLO, at most
    doubling the pool. TTFT is a trailing quantile: with no queue left it tells of a
    backlog already served, so a prefill pool's TTFT votes only while requests wait."""
    is_ttft = metric.type is MetricType.TTFT
    measured = view.value(S.TTFT_MS if is_ttft else S.ITL_MS) or 0.0
    slo = (view.slo.ttft_ms if is_ttft else view.slo.itl_ms) or math.inf
    if measured <= slo:
        return None
    if latency_settled(view):
        return None
    base = max(view.state.ready_replicas, 1)
    replicas = min(math.ceil(base * measured / slo), 2 * base)
    return Vote(
        metric.type,
        replicas,
        Reason.TARGET_TRACKING,
        lambda: f"{metric.type} {measured:.0f} ms over the SLO {slo:.0f} ms",
    )


# A decode pool running less than this share of what meets the ITL SLO is lightly loaded.
LIGHT_LOAD = 0.5


def latency_settled(view: PoolView) -> bool:
    """The pool's latency quantile (trailing over the metrics window) tells of load that is
    gone: a prefill pool with no queue left; a decode pool running well under what meets
    its ITL SLO (by the profile when there is one, else a KV cache under a quarter full)."""
    if view.role is Role.PREFILL:
        return queue_is_empty(view)
    running = view.value(S.RUNNING_REQUESTS)
    ready = view.state.ready_replicas
    if view.profile is not None and running is not None and ready > 0:
        context = (view.value(S.MEAN_INPUT_LENGTH) or 0.0) + (
            view.value(S.MEAN_OUTPUT_LENGTH) or 0.0) / 2  # fmt: skip
        if context > 0 and view.slo.itl_ms:
            capacity = view.profile.decode_capacity(context, view.slo.itl_ms)
            if capacity is not None:
                return running / ready < LIGHT_LOAD * capacity.concurrency
    kv = view.value(S.KV_CACHE_UTILIZATION)
    return kv is not None and kv < 0.25


def queue_is_empty(view: PoolView) -> bool:
    """Known to be empty: a queue signal was read, and every one read is zero."""
    read = [v for v in (view.value(S.QUEUED_REQUESTS), view.value(S.QUEUED_PREFILL_TOKENS))
            if v is not None]  # fmt: skip
    return bool(read) and all(v == 0 for v in read)


def _capacity(view: PoolView, metric: MetricSpec) -> Vote | None:
    """The capacity model on what is observed now (reactive) and, with a forecast, on the
    load expected at the cold-start horizon (the predictive floor): the higher wins."""
    if view.profile is None:
        return None
    try:
        estimate = _capacity_estimate(view, ahead=False)
        floor = _capacity_estimate(view, ahead=True) if view.forecast else None
    except ValueError:  # inconsistent signals (load with a zero mean length): no vote
        return None
    numbers = None if floor is None else Floor(estimate.replicas, floor.replicas)
    if floor is not None and math.ceil(floor.replicas) > math.ceil(estimate.replicas):
        reactive = estimate.replicas
        return Vote(
            metric.type,
            math.ceil(floor.replicas),
            Reason.FORECAST_FLOOR,
            lambda: f"forecast at the horizon: {floor.message} (reactive: {reactive:.2f})",
            numbers,
        )
    ratio = estimate.replicas / view.state.spec_replicas if view.state.spec_replicas else math.inf
    if estimate.reason == Reason.CAPACITY_MODEL and _within_tolerance(view, ratio):
        return Vote(
            metric.type,
            view.state.spec_replicas,
            Reason.WITHIN_TOLERANCE,
            lambda: f"{estimate.message}; usage ratio {ratio:.2f}",
            numbers,
        )
    return Vote(
        metric.type,
        math.ceil(estimate.replicas),
        Reason(estimate.reason),
        estimate.describe,
        numbers,
    )


def _capacity_estimate(view: PoolView, *, ahead: bool) -> CapacityEstimate:
    """``ahead``: the load signals as forecast at the horizon where higher than now."""
    assert view.profile is not None
    load = view.expected if ahead else view.value
    if view.role is Role.PREFILL:
        # A pool that falls behind completes less than arrives: the backlog's growth is the
        # rest of the arrivals (vLLM counts a request when it is done).
        mean_input = load(S.MEAN_INPUT_LENGTH) or 0.0
        unserved = view.backlog_growth / mean_input if mean_input > 0 else 0.0
        return prefill_replicas(
            view.profile,
            arrival_rate_per_s=(load(S.ARRIVAL_RATE) or 0.0) + unserved,
            mean_input_tokens=mean_input,
            queued_prefill_tokens=view.value(S.QUEUED_PREFILL_TOKENS) or 0.0,
            ttft_slo_ms=view.slo.ttft_ms or math.inf,
            drain_s=view.cold_start_s,
        )
    context = (load(S.MEAN_INPUT_LENGTH) or 0.0) + (load(S.MEAN_OUTPUT_LENGTH) or 0.0) / 2
    mean_output = load(S.MEAN_OUTPUT_LENGTH) or 0.0
    return decode_replicas(
        view.profile,
        output_tokens_per_s=load(S.OUTPUT_TOKEN_RATE) or 0.0,
        running_requests=view.value(S.RUNNING_REQUESTS) or 0.0,
        mean_context_tokens=context,
        itl_slo_ms=view.slo.itl_ms or math.inf,
        incoming_tokens_per_s=(view.incoming_per_s or 0.0) * mean_output,
    )


def _ratio_words(ratio: float) -> Callable[[], str]:
    return lambda: f"usage ratio {ratio:.2f}"


def _within_tolerance(view: PoolView, ratio: float) -> bool:
    rules = view.pool.scale_up_rules if ratio > 1 else view.pool.scale_down_rules
    return abs(ratio - 1.0) <= (rules.tolerance or 0.0)

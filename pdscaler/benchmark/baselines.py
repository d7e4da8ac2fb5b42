"""The autoscalers pdscaler is measured against, each re-created as a replay :data:`Step`.

Each baseline resizes the simulated pools through ``Cluster.set_replicas`` on its own
decision interval (the replay calls every step more often; a step acts only when its
interval is due), reads only what its original reads, and follows its original's
published rules and defaults. Sources are named in each docstring and in
``docs/benchmarks.md``. pdscaler itself runs through
:class:`~pdscaler.benchmark.replay.PdscalerStep`, with :func:`pdscaler_policy`.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pdscaler.benchmark.hpa import (
    HPA_SYNC_S,
    HpaBehavior,
    external_average_replicas,
    hpa_metric_replicas,
)
from pdscaler.benchmark.replay import EPOCH
from pdscaler.benchmark.sizing import Slo
from pdscaler.domain.policy import DEFAULT_TOLERANCE, Policy, Role, parse_policy
from pdscaler.domain.profile import PerfProfile
from pdscaler.sim.cluster import Cluster, Outcome, State

# The KV-cache utilisation target of the HPA-like decode pool, and the headroom KEDA-like
# leaves below the sequences a decode replica holds within the ITL SLO: the same 25%.
KV_TARGET = 0.75


class Every:
    """A decision interval on the replay clock: due at ``period_s``, 2 × ``period_s``, ...
    (once per period however often it is asked)."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self._next_s = period_s

    def due(self, t: float) -> bool:
        if t + _EPSILON_S < self._next_s:
            return False
        self._next_s = (math.floor((t + _EPSILON_S) / self.period_s) + 1) * self.period_s
        return True


# Replay times are sums of float steps: 15.000000000002 is 15.
_EPSILON_S = 1e-6


class StaticPeak:
    """Fixed pools sized for the trace's busiest minute, set once before the replay starts
    (as the replay's ``initial``): what an operator without an autoscaler provisions.
    Never resizes. Sizes: :func:`~pdscaler.benchmark.sizing.static_peak_replicas`."""

    def __call__(self, cluster: Cluster, t: float) -> None:
        return


class HpaLike:
    """A Kubernetes HorizontalPodAutoscaler (autoscaling/v2) on each pool, with every
    default: 15 s sync period, tolerance 0.1, default ``behavior`` (:class:`HpaBehavior`).

    Decode tracks the per-pod KV-cache utilisation at ``kv_target`` (vLLM's
    ``kv_cache_usage_perc`` as a Pods metric). Prefill tracks waiting requests per pod at
    ``queue_target`` (vLLM's ``num_requests_waiting``). The mean is over the ready pods;
    pending pods report no metric (HPA's missing pods) and draining pods are being deleted
    (HPA ignores them). Sources: Kubernetes ``pkg/controller/podautoscaler`` and the HPA docs.
    """

    def __init__(
        self,
        queue_target: float,
        max_replicas: int,
        *,
        kv_target: float = KV_TARGET,
        min_replicas: int = 1,
        sync_s: float = HPA_SYNC_S,
    ) -> None:
        self.queue_target = queue_target
        self.kv_target = kv_target
        self._every = Every(sync_s)
        self._behavior = {role: HpaBehavior(min_replicas, max_replicas) for role in Role}

    def __call__(self, cluster: Cluster, t: float) -> None:
        if not self._every.due(t):
            return
        now = EPOCH + timedelta(seconds=t)
        for role in Role:
            ready, pending, _draining = cluster.counts(role)
            current = ready + pending
            ratio = self._usage_ratio(cluster, role)
            if ratio is None:
                continue  # no pod reports: HPA cannot compute, and holds
            recommendation = hpa_metric_replicas(ratio, ready, pending, current, DEFAULT_TOLERANCE)
            desired = self._behavior[role].normalize(recommendation, current, now)
            if desired != current:
                cluster.set_replicas(role, desired)
                self._behavior[role].scaled(now, desired - current)

    def _usage_ratio(self, cluster: Cluster, role: Role) -> float | None:
        """The pool's per-pod metric over its ready pods, divided by the target; None when
        no pod is ready (no pod reports)."""
        ready = [r for r in cluster.replicas(role) if r.state is State.READY]
        if not ready:
            return None
        if role is Role.DECODE:
            utilization = sum(r.kv_tokens / r.kv_capacity for r in ready) / len(ready)
            return utilization / self.kv_target
        return sum(r.waiting for r in ready) / len(ready) / self.queue_target


class KedaLike:
    """A KEDA ScaledObject with a Prometheus trigger per pool (metricType AverageValue),
    with KEDA's defaults: pollingInterval 30 s, cooldownPeriod 300 s, minReplicaCount 0,
    activationThreshold 0, and the HPA it creates left at HPA's defaults (15 s sync,
    tolerance 0.1, default ``behavior``, minReplicas max(minReplicaCount, 1)).

    Prefill: ``sum(num_requests_waiting)`` (requests waiting for prefill, a router's queue
    included) with ``prefill_threshold`` per replica. Decode: requests waiting or running
    on decode with ``decode_threshold`` per replica (the benchmark sets 0.75 × the
    sequences one replica decodes within the ITL SLO); decode requests wait only when the
    KV cache is full, far beyond the ITL SLO, so a waiting-only trigger would never grow
    decode in time. Between polls the HPA sizes the pool to ceil(metric ÷ threshold); at
    each poll a pool at 0 with a metric above the activation threshold is activated to 1,
    and a pool whose metric stayed at or below it for the cooldown period goes to 0.
    Sources: KEDA docs (ScaledObject spec, Prometheus scaler) and ``pkg/scaling/executor``.
    """

    def __init__(
        self,
        prefill_threshold: float,
        decode_threshold: float,
        max_replicas: int,
        *,
        min_replica_count: int = 0,
        polling_s: float = 30.0,
        cooldown_s: float = 300.0,
        sync_s: float = HPA_SYNC_S,
    ) -> None:
        self.thresholds = {Role.PREFILL: prefill_threshold, Role.DECODE: decode_threshold}
        self.min_replica_count = min_replica_count
        self.cooldown_s = cooldown_s
        self._poll, self._sync = Every(polling_s), Every(sync_s)
        hpa_min = max(min_replica_count, 1)
        self._behavior = {role: HpaBehavior(hpa_min, max_replicas) for role in Role}
        self._last_active = dict.fromkeys(Role, 0.0)

    def metric(self, cluster: Cluster, role: Role) -> float:
        waiting, _tokens = cluster.queued(role)
        return float(waiting if role is Role.PREFILL else waiting + cluster.running(role))

    def __call__(self, cluster: Cluster, t: float) -> None:
        if self._poll.due(t):
            for role in Role:
                self._poll_one(cluster, role, t)
        if self._sync.due(t):
            now = EPOCH + timedelta(seconds=t)
            for role in Role:
                self._sync_one(cluster, role, now)

    def _poll_one(self, cluster: Cluster, role: Role, t: float) -> None:
        ready, pending, _draining = cluster.counts(role)
        current = ready + pending
        if self.metric(cluster, role) > 0:  # activationThreshold 0
            self._last_active[role] = t
            if current == 0:
                cluster.set_replicas(role, max(self.min_replica_count, 1))
        elif (
            current > 0
            and self.min_replica_count == 0
            and t - self._last_active[role] >= self.cooldown_s
        ):
            cluster.set_replicas(role, 0)

    def _sync_one(self, cluster: Cluster, role: Role, now: datetime) -> None:
        ready, pending, _draining = cluster.counts(role)
        current = ready + pending
        if current == 0:
            return  # HPA does not scale a target at zero; KEDA activates it
        recommendation = external_average_replicas(
            self.metric(cluster, role), self.thresholds[role], current, DEFAULT_TOLERANCE
        )
        desired = self._behavior[role].normalize(recommendation, current, now)
        if desired != current:
            cluster.set_replicas(role, desired)
            self._behavior[role].scaled(now, desired - current)


def pdscaler_policy(
    slo: Slo,
    max_replicas: int,
    cold_start_s: float,
    profile: str,
    queued_tokens_target: int,
    *,
    min_replicas: int = 1,
    forecast: str = "auto",
) -> Policy:
    """pdscaler's default policy for a P/D pair, as the benchmark runs it.

    Each pool: the capacity model (``Capacity`` with the profile the cluster runs), a load
    metric for what the model cannot see (queued prefill tokens at
    ``queued_tokens_target`` per replica; KV-cache utilisation 0.75), and the latency guard
    (TTFT and ITL at p90 against the SLO, guard margin 0.2). HPA's default ``behavior``;
    ``coldStartSeconds`` is the simulator's cold start, so the forecast horizon is the
    real one. ``forecast``: the model of ``spec.forecast`` (``none``: reactive only).
    """

    def pool(role: Role, metrics: list[dict[str, object]]) -> dict[str, object]:
        return {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": role.value},
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "metrics": [*metrics, {"type": "Capacity", "profile": profile}],
        }

    return parse_policy(
        {
            "apiVersion": "pdscaler.io/v1alpha1",
            "kind": "PDScalingPolicy",
            "metadata": {"name": "bench", "namespace": "bench"},
            "spec": {
                "mode": "active",
                "engine": "vllm",
                "slo": {"ttftMs": slo.ttft_ms, "itlMs": slo.itl_ms, "guardMargin": 0.2},
                "coldStartSeconds": round(cold_start_s),
                "forecast": {"model": forecast},
                "prefill": pool(Role.PREFILL, [
                    {"type": "QueuedPrefillTokens", "targetPerReplica": queued_tokens_target},
                    {"type": "TTFT", "quantile": 0.9},
                ]),
                "decode": pool(Role.DECODE, [
                    {"type": "KVCacheUtilization", "target": KV_TARGET},
                    {"type": "ITL", "quantile": 0.9},
                ]),
            },
        }
    )  # fmt: skip


# NVIDIA Dynamo SLA planner defaults (components/planner ... defaults.py, SLAPlannerDefaults).
DYNAMO_ADJUSTMENT_INTERVAL_S = 180.0
DYNAMO_MIN_ENDPOINT = 1


@dataclass(frozen=True)
class IntervalMetrics:
    """What Dynamo's planner reads from Prometheus for one adjustment interval: the
    requests that arrived and their mean input length; the mean output length, ITL and
    duration of the requests that finished; the mean TTFT of first tokens given."""

    requests: int
    isl: float
    osl: float
    ttft_ms: float
    itl_ms: float
    duration_s: float

    def valid(self) -> bool:
        """Dynamo skips an interval with no traffic (NaN averages)."""
        return not any(math.isnan(v) for v in (self.isl, self.osl, self.ttft_ms, self.itl_ms))


def observe_interval(cluster: Cluster, since: float, until: float) -> IntervalMetrics:
    arrived = _between(cluster.outcomes, since, until, lambda o: o.request.arrival_s)
    first = _between(cluster.first_tokens, since, until, lambda o: o.first_token_s)
    finished = _between(cluster.finished, since, until, lambda o: o.done_s)
    return IntervalMetrics(
        requests=len(arrived),
        isl=_mean([o.request.input_tokens for o in arrived]),
        osl=_mean([o.request.output_tokens for o in finished]),
        ttft_ms=_mean([o.ttft_s * 1000 for o in first]),
        itl_ms=_mean([o.tpot_s * 1000 for o in finished]),
        duration_s=_mean([o.done_s - o.request.arrival_s for o in finished]),
    )


def dynamo_replicas(
    profile: PerfProfile,
    load: IntervalMetrics,
    *,
    interval_s: float,
    itl_slo_ms: float,
    ttft_correction: float = 1.0,
    itl_correction: float = 1.0,
    min_endpoint: int = DYNAMO_MIN_ENDPOINT,
) -> tuple[int, int]:
    """(prefill, decode) replicas by Dynamo's SLA planner (``planner_core.py``,
    ``_compute_replica_requirements``), one GPU per engine, from the predicted load:

        prefill = ceil(requests × ISL / interval × min(1, ttft_correction)
                       ÷ prefill tokens/s per GPU at ISL)
        decode  = ceil(requests × OSL / interval
                       ÷ best decode tokens/s per GPU within ITL SLO ÷ itl_correction
                         at context ISL + OSL / 2)

    ISL is clamped to the profile's measured prefill range, as Dynamo's interpolator
    clamps it. Where no decode point meets the corrected ITL, the lowest-ITL point is used
    (Dynamo's interpolator returns the throughput at its lowest load).
    """
    isl = _clamp_isl(profile, load.isl)
    prefill_load = load.requests * load.isl / interval_s * min(1.0, ttft_correction)
    prefill = math.ceil(prefill_load / profile.prefill_tokens_per_s(isl))
    corrected_itl = itl_slo_ms / itl_correction if itl_correction > 0 else itl_slo_ms
    context = max(load.isl + load.osl / 2, 1.0)
    capacity = profile.decode_capacity(context, corrected_itl)
    capacity = capacity or profile.lowest_itl_capacity(context)
    decode = math.ceil(load.requests * load.osl / interval_s / capacity.tokens_per_s)
    return max(prefill, min_endpoint), max(decode, min_endpoint)


class DynamoLike:
    """NVIDIA Dynamo's SLA planner, throughput-based, with the constant (last-value) load
    predictor, its correction factors on (its default) and its defaults: adjustment
    interval 180 s, min_endpoint 1. Every interval it observes the interval's traffic,
    computes the correction factors (observed ÷ profiled TTFT and ITL), predicts the next
    interval equals this one and sets both pools by :func:`dynamo_replicas`, without
    waiting for earlier changes to finish. Its GPU budget (default 8) is replaced by the
    benchmark's per-pool maxReplicas, the same bound every policy has. Sources: Dynamo
    ``docs/architecture/sla_planner.md`` and ``planner/utils/planner_core.py``.
    """

    def __init__(
        self,
        profile: PerfProfile,
        slo: Slo,
        max_replicas: int,
        *,
        interval_s: float = DYNAMO_ADJUSTMENT_INTERVAL_S,
        correction: bool = True,
    ) -> None:
        self.profile, self.slo = profile, slo
        self.max_replicas = max_replicas
        self.interval_s = interval_s
        self.correction = correction
        self._every = Every(interval_s)

    def __call__(self, cluster: Cluster, t: float) -> None:
        if not self._every.due(t):
            return
        load = observe_interval(cluster, t - self.interval_s, t)
        if not load.valid():
            return
        ready_decode = cluster.counts(Role.DECODE)[0]
        ttft_correction = itl_correction = 1.0
        if self.correction:
            if ready_decode == 0:
                return  # Dynamo fails to correct without decode workers, and skips
            ttft_correction, itl_correction = self._corrections(load, ready_decode)
        prefill, decode = dynamo_replicas(
            self.profile, load, interval_s=self.interval_s, itl_slo_ms=self.slo.itl_ms,
            ttft_correction=ttft_correction, itl_correction=itl_correction,
        )  # fmt: skip
        cluster.set_replicas(Role.PREFILL, min(prefill, self.max_replicas))
        cluster.set_replicas(Role.DECODE, min(decode, self.max_replicas))

    def _corrections(self, load: IntervalMetrics, ready_decode: int) -> tuple[float, float]:
        expected_ttft = self.profile.prefill_ms(_clamp_isl(self.profile, load.isl))
        concurrency = load.requests / ready_decode * load.duration_s / self.interval_s
        expected_itl = self.profile.itl_ms(load.isl + load.osl / 2, concurrency)
        return load.ttft_ms / expected_ttft, load.itl_ms / expected_itl


def _clamp_isl(profile: PerfProfile, isl: float) -> float:
    return min(max(isl, profile.prefill[0].isl_tokens), profile.prefill[-1].isl_tokens)


def _between(
    items: list[Outcome], since: float, until: float, at: Callable[[Outcome], float]
) -> list[Outcome]:
    """The items (kept in order of ``at``) with since < at <= until."""
    return items[bisect_right(items, since, key=at) : bisect_right(items, until, key=at)]


def _mean(values: list[float] | list[int]) -> float:
    return sum(values) / len(values) if values else math.nan

"""The scaling-quality benchmark: every policy on every trace, through one simulated cluster.

A trace is cut to its first minutes (optional), judged by its SLO
(:func:`~pdscaler.benchmark.sizing.trace_slo`) and replayed at a rate multiplier chosen so
that static-peak needs at least 16 replicas in its larger pool (unless one is given).
Every policy then replays the same requests on the same cluster model, with the same
bounds: at least 1 and at most :data:`MAX_REPLICAS_FACTOR` × static-peak's larger pool
replicas per pool. Dynamic policies start from the sizes the first minute needs, and no
policy acts before :data:`WARMUP_S`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pdscaler.benchmark.baselines import (
    KV_TARGET,
    DynamoLike,
    HpaLike,
    KedaLike,
    StaticPeak,
    pdscaler_policy,
)
from pdscaler.benchmark.replay import PdscalerStep, Sample, Step, replay
from pdscaler.benchmark.report import PolicyMetrics, as_json, compare, measure
from pdscaler.benchmark.sizing import (
    Slo,
    decode_concurrency,
    first_minute_replicas,
    lower_bound_gpu_hours,
    queue_target,
    queued_tokens_target,
    rate_multiplier,
    static_peak_replicas,
    trace_slo,
)
from pdscaler.domain.policy import Role
from pdscaler.sim.cluster import Cluster, SimConfig
from pdscaler.sim.traces import Request, load_trace, scale_rate, window

STATIC_PEAK = "static-peak"
# pdscaler as it ships (forecasting, model auto) and reactive only (forecast: none)
REACTIVE = "pdscaler-reactive"
POLICIES = (STATIC_PEAK, "hpa", "keda", "dynamo", "pdscaler", REACTIVE)
# Room above static-peak for policies that react to bursts, the same for every policy.
MAX_REPLICAS_FACTOR = 4
# A request not finished this long after the last arrival counts as dropped.
DRAIN_S = 900.0
# How often the replay samples the cluster and calls the step (pdscaler's loop interval).
INTERVAL_S = 5.0
# No policy acts before the metrics window (the simulator's 60 s) has filled: a real
# autoscaler starts on a cluster whose metrics have a past; the replay's cluster has none.
WARMUP_S = 60.0

# (trace, policy, simulated seconds done, simulated seconds to go at most)
Progress = Callable[[str, str, float, float], None]


@dataclass(frozen=True)
class TraceSetup:
    """One trace as every policy replays it."""

    name: str
    path: str
    minutes: float | None
    multiplier: float
    slo: Slo
    requests: list[Request] = field(repr=False)
    static_peak: dict[Role, int]
    initial: dict[Role, int]
    max_replicas: int
    lower_bound_gpu_hours: float
    queue_target: int
    queued_tokens_target: int
    decode_concurrency: int


@dataclass
class TraceResult:
    setup: TraceSetup
    metrics: list[PolicyMetrics]


def prepare(
    path: Path, config: SimConfig, *, minutes: float | None = None, rate: float | None = None
) -> TraceSetup:
    """Load, cut and scale one trace, and fix what every policy on ``config``'s cluster
    will share."""
    profile = config.profile
    original = load_trace(path)
    if minutes is not None:
        original = window(original, 0.0, minutes * 60.0)
        if not original:
            raise ValueError(f"{path}: no requests in the first {minutes:g} minutes")
    slo = trace_slo(original)
    multiplier = rate if rate is not None else rate_multiplier(original, profile, slo)
    requests = scale_rate(original, multiplier) if multiplier != 1 else list(original)
    peak = static_peak_replicas(requests, profile, slo)
    return TraceSetup(
        name=path.stem,
        path=str(path),
        minutes=minutes,
        multiplier=multiplier,
        slo=slo,
        requests=requests,
        static_peak=peak,
        initial=first_minute_replicas(requests, profile, slo),
        max_replicas=MAX_REPLICAS_FACTOR * max(peak.values()),
        lower_bound_gpu_hours=lower_bound_gpu_hours(requests, profile, slo.itl_ms),
        queue_target=queue_target(requests, profile, slo),
        queued_tokens_target=queued_tokens_target(
            requests, profile, slo, config.prefill_token_budget
        ),
        decode_concurrency=decode_concurrency(requests, profile, slo),
    )


def build_step(
    policy: str, setup: TraceSetup, config: SimConfig, profile_ref: str
) -> tuple[Step, dict[Role, int]]:
    """The step of ``policy`` for this trace, and the sizes its pools start at.
    ``profile_ref`` names ``config.profile`` in pdscaler's policy."""
    profile = config.profile
    dynamic = dict(setup.initial)
    if policy == STATIC_PEAK:
        return StaticPeak(), dict(setup.static_peak)
    if policy == "hpa":
        return HpaLike(setup.queue_target, setup.max_replicas), dynamic
    if policy == "keda":
        decode_threshold = max(1, int(KV_TARGET * setup.decode_concurrency))
        return KedaLike(setup.queue_target, decode_threshold, setup.max_replicas), dynamic
    if policy == "dynamo":
        return DynamoLike(profile, setup.slo, setup.max_replicas), dynamic
    if policy in ("pdscaler", REACTIVE):
        document = pdscaler_policy(
            setup.slo,
            setup.max_replicas,
            config.cold_start_s,
            profile_ref,
            setup.queued_tokens_target,
            forecast="none" if policy == REACTIVE else "auto",
        )
        return PdscalerStep(document, profile, interval_s=INTERVAL_S), dynamic
    raise ValueError(f"unknown policy {policy!r}; use one of {', '.join(POLICIES)}")


class AfterWarmup:
    """``step``, called only from :data:`WARMUP_S` on."""

    def __init__(self, step: Step, warmup_s: float = WARMUP_S) -> None:
        self.step = step
        self.warmup_s = warmup_s

    def __call__(self, cluster: Cluster, t: float) -> None:
        if t >= self.warmup_s:
            self.step(cluster, t)


def run_policy(
    policy: str,
    setup: TraceSetup,
    config: SimConfig,
    profile_ref: str,
    progress: Progress | None = None,
) -> PolicyMetrics:
    """Replay the trace under one policy and measure it (the outcomes are not kept)."""
    step, initial = build_step(policy, setup, config, profile_ref)
    end = (setup.requests[-1].arrival_s if setup.requests else 0.0) + DRAIN_S

    def on_interval(sample: Sample) -> None:
        if progress is not None:
            progress(setup.name, policy, sample.t, end)

    started = time.perf_counter()
    try:
        result = replay(
            policy,
            setup.requests,
            config,
            initial,
            AfterWarmup(step),
            interval_s=INTERVAL_S,
            drain_s=DRAIN_S,
            on_interval=on_interval,
        )
    finally:
        if isinstance(step, PdscalerStep):
            step.close()
    metrics = measure(result, setup.slo, setup.lower_bound_gpu_hours)
    return replace(metrics, wall_s=time.perf_counter() - started)


def run_trace(
    setup: TraceSetup,
    policies: Sequence[str],
    config: SimConfig,
    profile_ref: str,
    progress: Progress | None = None,
) -> TraceResult:
    metrics = [run_policy(p, setup, config, profile_ref, progress) for p in policies]
    return TraceResult(setup, compare(metrics, STATIC_PEAK))


def parse_policies(text: str | None) -> list[str]:
    """``a,b`` → the named policies, in the benchmark's order; all when None."""
    if text is None:
        return list(POLICIES)
    wanted = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in POLICIES]
    if unknown or not wanted:
        raise ValueError(f"unknown policies {unknown or [text]}; use some of {', '.join(POLICIES)}")
    return [name for name in POLICIES if name in wanted]


def result_json(result: TraceResult) -> dict[str, Any]:
    """Everything about one trace's run as plain JSON values."""
    setup = result.setup
    return {
        "trace": setup.name,
        "path": setup.path,
        "minutes": setup.minutes,
        "rateMultiplier": setup.multiplier,
        "requests": len(setup.requests),
        "slo": {"kind": setup.slo.kind, "ttftMs": setup.slo.ttft_ms, "itlMs": setup.slo.itl_ms},
        "staticPeak": {role.value: n for role, n in setup.static_peak.items()},
        "initial": {role.value: n for role, n in setup.initial.items()},
        "maxReplicas": setup.max_replicas,
        "lowerBoundGpuHours": setup.lower_bound_gpu_hours,
        "queueTarget": setup.queue_target,
        "queuedTokensTarget": setup.queued_tokens_target,
        "decodeConcurrency": setup.decode_concurrency,
        "policies": {m.policy: as_json(m) for m in result.metrics},
    }


def describe(setup: TraceSetup) -> str:
    """One line that says what a trace's table is about."""
    cut = f"first {setup.minutes:g} min, " if setup.minutes is not None else ""
    peak = setup.static_peak
    return (
        f"{setup.name} ({cut}×{setup.multiplier:g} rate, {len(setup.requests):,} requests; "
        f"{setup.slo.kind} SLO TTFT {setup.slo.ttft_ms:g} ms, ITL {setup.slo.itl_ms:g} ms; "
        f"static-peak {peak[Role.PREFILL]} prefill + {peak[Role.DECODE]} decode; "
        f"lower bound {setup.lower_bound_gpu_hours:.2f} GPU-h)"
    )

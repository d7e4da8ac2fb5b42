"""What one replay achieved, and the table and JSON that compare policies on a trace.

Pure: metrics are computed from a :class:`Replay` and the trace's SLO; formatting returns
strings and plain dicts. No I/O (the caller prints and writes; plots are in
:mod:`pdscaler.benchmark.plots`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from pdscaler.benchmark.replay import Replay
from pdscaler.benchmark.sizing import Slo
from pdscaler.domain.policy import Role
from pdscaler.sim.adapters import nearest_rank


@dataclass(frozen=True)
class Percentiles:
    p50: float
    p99: float


@dataclass(frozen=True)
class PolicyMetrics:
    """One policy on one trace. Latencies in ms; NaN where no request had the value.

    ``attainment``: share of all requests whose TTFT is within the TTFT SLO and whose mean
    time per output token is within the ITL SLO; a request not finished by the end of the
    replay (``dropped``) misses. ``reversals_per_pool_hour``: direction changes of the
    pools' sizes, summed over both pools, per pool and per hour of replay.
    """

    policy: str
    requests: int
    attainment: float
    ttft_attainment: float
    itl_attainment: float
    dropped: int
    gpu_hours: float
    gpu_hours_by_pool: dict[str, float]
    vs_lower_bound: float
    vs_static_peak: float | None
    reversals: dict[str, int]
    reversals_per_pool_hour: float
    ttft_ms: Percentiles
    itl_ms: Percentiles
    span_s: float
    wall_s: float = 0.0
    timeline: list[tuple[float, float, int, int]] = field(default_factory=list, repr=False)


percentile = nearest_rank  # the quantile the simulator's metrics use too


def measure(replay: Replay, slo: Slo, lower_bound_gpu_hours: float) -> PolicyMetrics:
    """The metrics of one replay; ``vs_static_peak`` is filled in by :func:`compare`."""
    outcomes = replay.outcomes
    finished = [o for o in outcomes if not math.isnan(o.done_s)]
    started = [o for o in outcomes if not math.isnan(o.first_token_s)]
    ttft_ok = {id(o) for o in started if o.ttft_s * 1000 <= slo.ttft_ms}
    itl_ok = {id(o) for o in finished if o.tpot_s * 1000 <= slo.itl_ms}
    total = max(len(outcomes), 1)
    gpu_hours = {role.value: s / 3600.0 for role, s in replay.gpu_seconds.items()}
    reversals = {role.value: replay.reversals(role) for role in Role}
    pool_hours = len(Role) * replay.span_s / 3600.0
    return PolicyMetrics(
        policy=replay.name,
        requests=len(outcomes),
        attainment=len(ttft_ok & itl_ok) / total,
        ttft_attainment=len(ttft_ok) / total,
        itl_attainment=len(itl_ok) / total,
        dropped=len(outcomes) - len(finished),
        gpu_hours=sum(gpu_hours.values()),
        gpu_hours_by_pool=gpu_hours,
        vs_lower_bound=sum(gpu_hours.values()) / lower_bound_gpu_hours
        if lower_bound_gpu_hours > 0
        else math.nan,
        vs_static_peak=None,
        reversals=reversals,
        reversals_per_pool_hour=sum(reversals.values()) / pool_hours if pool_hours else 0.0,
        ttft_ms=_percentiles([o.ttft_s * 1000 for o in started]),
        itl_ms=_percentiles([o.tpot_s * 1000 for o in finished]),
        span_s=replay.span_s,
        timeline=[
            (s.t, s.arrivals_per_s, s.replicas[Role.PREFILL], s.replicas[Role.DECODE])
            for s in replay.timeline
        ],
    )


def compare(metrics: Sequence[PolicyMetrics], baseline: str) -> list[PolicyMetrics]:
    """The metrics with ``vs_static_peak`` set against the policy named ``baseline``
    (left None when it was not run)."""
    reference = next((m for m in metrics if m.policy == baseline), None)
    if reference is None or reference.gpu_hours <= 0:
        return list(metrics)
    return [replace(m, vs_static_peak=m.gpu_hours / reference.gpu_hours) for m in metrics]


COLUMNS = (
    ("policy", 17),
    ("attain", 7),
    ("GPU-h", 8),
    ("÷LB", 6),
    ("÷static", 7),
    ("rev/pool-h", 10),
    ("dropped", 7),
    ("TTFT p50/p99 ms", 17),
    ("ITL p50/p99 ms", 15),
)


def format_table(metrics: Sequence[PolicyMetrics]) -> str:
    """One line per policy, aligned, with a header."""
    header = "  ".join(f"{name:>{width}}" if i else f"{name:<{width}}"
                       for i, (name, width) in enumerate(COLUMNS))  # fmt: skip
    return "\n".join([header, *(_row(m) for m in metrics)])


def _row(m: PolicyMetrics) -> str:
    cells = (
        m.policy,
        f"{m.attainment:.1%}",
        f"{m.gpu_hours:.2f}",
        f"{m.vs_lower_bound:.2f}",
        "-" if m.vs_static_peak is None else f"{m.vs_static_peak:.2f}",
        f"{m.reversals_per_pool_hour:.1f}",
        str(m.dropped),
        f"{_ms(m.ttft_ms.p50)}/{_ms(m.ttft_ms.p99)}",
        f"{_ms(m.itl_ms.p50)}/{_ms(m.itl_ms.p99)}",
    )
    return "  ".join(
        f"{cell:>{width}}" if i else f"{cell:<{width}}"
        for i, (cell, (_name, width)) in enumerate(zip(cells, COLUMNS, strict=True))
    )


def as_json(metrics: PolicyMetrics) -> dict[str, Any]:
    """The metrics as plain JSON values (NaN as null); the timeline as
    ``[t_s, arrivals_per_s, prefill_replicas, decode_replicas]`` rows."""
    document: dict[str, Any] = _finite(asdict(metrics))
    return document


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _percentiles(values: Sequence[float]) -> Percentiles:
    return Percentiles(percentile(values, 0.5), percentile(values, 0.99))


def _ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"

"""What a trace asks of the cluster: its SLOs, its load by minute, the sizes it needs.

Pure functions of a trace, a :class:`PerfProfile` and an SLO; no I/O. They give the
benchmark its fixed points: the SLO a trace is judged by, the static-peak sizes (each
pool sized for its busiest minute), the sizes every dynamic policy starts from (the first
minute's), the rate multiplier that makes a trace big enough to be worth autoscaling, and
the work-conserving lower bound on GPU-hours.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pdscaler.domain.policy import Role
from pdscaler.domain.profile import DecodeCapacity, PerfProfile
from pdscaler.engine.capacity import UNREACHABLE_UTILIZATION, max_utilization
from pdscaler.sim.traces import Request, scale_rate

# Static-peak sizes come from minute bins: short enough to see a trace's bursts, long
# enough that a pool sized for the bin's mean rate is what an operator would provision.
MINUTE_S = 60.0
# A trace whose mean prompt is at least this long is judged by the long-context SLO.
LONG_CONTEXT_TOKENS = 4096
# The smallest larger pool static-peak may have: below it, whole replicas are too coarse
# for the difference between two autoscalers to show.
MIN_PEAK_REPLICAS = 16


@dataclass(frozen=True)
class Slo:
    """What every request is held to: time to first token, and mean time per output token."""

    ttft_ms: float
    itl_ms: float
    kind: str = ""


# Chat: TTFT 500 ms is NVIDIA Dynamo's SLA-planner default; ITL 30 ms (33 tokens/s per
# stream) lies between Dynamo's 20 ms example and its 50 ms default.
CHAT_SLO = Slo(ttft_ms=500.0, itl_ms=30.0, kind="chat")
# Long context: the Mooncake traces' own evaluation allows 30 s TTFT on a 70B-class model.
# On the bundled 8B profile the 99th percentile prompt of the Mooncake conversation trace
# takes 4.4 s to prefill alone, so 5 s is the tightest whole-second SLO that 99% of its
# requests can meet at all. Decode speed does not depend on the prompt's source: same ITL.
LONG_CONTEXT_SLO = Slo(ttft_ms=5000.0, itl_ms=30.0, kind="long-context")


@dataclass(frozen=True)
class MinuteLoad:
    """The requests that arrive within one minute bin; ``prefill_s``: the sum of their
    prefill times, each prompt alone on one replica."""

    start_s: float
    requests: int
    input_tokens: int
    output_tokens: int
    prefill_s: float

    @property
    def arrival_rate_per_s(self) -> float:
        return self.requests / MINUTE_S


def trace_slo(trace: Sequence[Request]) -> Slo:
    """The SLO a trace is judged by: long-context when its mean prompt is long, else chat."""
    mean_input = sum(r.input_tokens for r in trace) / max(len(trace), 1)
    return LONG_CONTEXT_SLO if mean_input >= LONG_CONTEXT_TOKENS else CHAT_SLO


def minute_loads(trace: Sequence[Request], profile: PerfProfile) -> list[MinuteLoad]:
    """The trace in minute bins from 0 s, empty minutes left out."""
    bins: dict[int, list[float]] = {}
    solo_s: dict[int, float] = {}  # a scaled trace repeats its prompt lengths many times
    for request in trace:
        sums = bins.setdefault(int(request.arrival_s // MINUTE_S), [0, 0, 0, 0.0])
        sums[0] += 1
        sums[1] += request.input_tokens
        sums[2] += request.output_tokens
        cost = solo_s.get(request.input_tokens)
        if cost is None:
            cost = solo_s[request.input_tokens] = profile.prefill_ms(request.input_tokens) / 1e3
        sums[3] += cost
    return [
        MinuteLoad(k * MINUTE_S, int(n), int(isl), int(osl), prefill_s)
        for k, (n, isl, osl, prefill_s) in sorted(bins.items())
    ]


def pool_replicas(role: Role, load: MinuteLoad, profile: PerfProfile, slo: Slo) -> float:
    """Replicas (fractional) that carry ``load`` at the SLO.

    Prefill: each replica an M/D/1 queue (pdscaler's capacity model) whose service time S
    is the minute's mean prefill time, and whose mean TTFT S + ρS ÷ 2(1 - ρ) stays within
    the SLO: replicas = λ·S ÷ ρmax. The mean of the prefill times, not the prefill time of
    the mean prompt: prefill time grows faster than length for long prompts, and the
    Mooncake traces' prompts are heavy-tailed (their mean prefill is 1.4 times the mean
    prompt's). Decode: the minute's output tokens/s and its sequences in flight, rate ×
    mean output length × ITL (Little's law, a sequence taking one ITL per token), at
    :func:`decode_operating_point`.
    """
    if load.requests == 0:
        return 0.0
    mean_input = load.input_tokens / load.requests
    mean_output = load.output_tokens / load.requests
    if role is Role.PREFILL:
        service_s = load.prefill_s / load.requests
        slo_s = slo.ttft_ms / 1000.0
        rho = max_utilization(service_s, slo_s) if service_s < slo_s else UNREACHABLE_UTILIZATION
        return load.arrival_rate_per_s * service_s / rho
    capacity = decode_operating_point(profile, mean_input + mean_output / 2, slo.itl_ms)
    running = load.arrival_rate_per_s * mean_output * slo.itl_ms / 1000.0
    return max(
        load.output_tokens / MINUTE_S / capacity.tokens_per_s, running / capacity.concurrency
    )


def decode_operating_point(
    profile: PerfProfile, context_tokens: float, itl_slo_ms: float
) -> DecodeCapacity:
    """What one decode replica carries within the ITL SLO at ``context_tokens``: the
    smaller of two readings of the profile.

    ``profile.decode_capacity`` (pdscaler's capacity model) blends the best points of the
    two measured contexts around ``context_tokens``; ``profile.itl_ms`` (what the simulator
    runs on) blends their ITLs at equal concurrency. Between measured contexts the two
    disagree (at 1,260 tokens and 30 ms, 406 sequences against about 313 on the bundled
    profile), and a size that fits only the first misses the SLO in the simulator. Where
    no point meets the SLO, the lowest-ITL point.
    """
    context = max(context_tokens, 1.0)
    model = profile.decode_capacity(context, itl_slo_ms) or profile.lowest_itl_capacity(context)
    concurrency = _concurrency_within(profile, context, itl_slo_ms, model.concurrency)
    if concurrency >= model.concurrency:
        return model
    itl_ms = profile.itl_ms(context, concurrency)
    return DecodeCapacity(concurrency / itl_ms * 1000.0, concurrency, itl_ms)


def _concurrency_within(
    profile: PerfProfile, context: float, itl_slo_ms: float, at_most: float
) -> float:
    """The most sequences, up to ``at_most``, that ``profile.itl_ms`` decodes within the
    SLO (bisection: ITL grows with the batch over the range that matters); at least one."""
    if profile.itl_ms(context, at_most) <= itl_slo_ms:
        return at_most
    low, high = 1.0, at_most
    if profile.itl_ms(context, low) > itl_slo_ms:
        return low
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (
            (middle, high) if profile.itl_ms(context, middle) <= itl_slo_ms else (low, middle)
        )
    return low


def peak_replicas(trace: Sequence[Request], profile: PerfProfile, slo: Slo) -> dict[Role, float]:
    """Per pool, the fractional replicas its busiest minute needs (the minute that needs
    the most of that pool: prompt tokens for prefill, output tokens for decode)."""
    loads = minute_loads(trace, profile)
    return {
        role: max((pool_replicas(role, load, profile, slo) for load in loads), default=0.0)
        for role in Role
    }


def static_peak_replicas(
    trace: Sequence[Request], profile: PerfProfile, slo: Slo
) -> dict[Role, int]:
    """Whole replicas per pool for the trace's busiest minute (at least one each)."""
    return {role: max(1, math.ceil(r)) for role, r in peak_replicas(trace, profile, slo).items()}


def first_minute_replicas(
    trace: Sequence[Request], profile: PerfProfile, slo: Slo
) -> dict[Role, int]:
    """Whole replicas per pool for the trace's first minute: where dynamic policies start,
    as if the cluster had been serving that load before the replay began."""
    loads = minute_loads(trace, profile)[:1]
    return {
        role: max(1, math.ceil(max((pool_replicas(role, x, profile, slo) for x in loads),
                                   default=0.0)))
        for role in Role
    }  # fmt: skip


def rate_multiplier(
    trace: Sequence[Request],
    profile: PerfProfile,
    slo: Slo,
    at_least: int = MIN_PEAK_REPLICAS,
) -> int:
    """The smallest whole multiplier of the request rate at which static-peak needs at
    least ``at_least`` replicas in its larger pool.

    Sizes grow about linearly with the rate, so the first guess is the ratio to the
    trace's own peak; it is then moved one at a time, up until the scaled trace (built as
    the replay builds it, with :func:`scale_rate`) needs enough, down while it still does.
    """
    peak = max(peak_replicas(trace, profile, slo).values())
    if peak <= 0:
        raise ValueError("the trace has no requests")

    def enough(multiplier: int) -> bool:
        sizes = static_peak_replicas(scale_rate(trace, multiplier), profile, slo)
        return max(sizes.values()) >= at_least

    multiplier = max(1, math.ceil(at_least / peak))
    while not enough(multiplier):
        multiplier += 1
    while multiplier > 1 and enough(multiplier - 1):
        multiplier -= 1
    return multiplier


def best_prefill_tokens_per_s(profile: PerfProfile) -> float:
    """The highest prefill rate of one replica: the best measured point (the simulator
    interpolates between measured points, and a straight line between two points never
    beats both ends)."""
    return max(p.isl_tokens / p.ttft_ms * 1000.0 for p in profile.prefill)


def best_decode_tokens_per_s(profile: PerfProfile, itl_slo_ms: float) -> float:
    """The highest output rate of one replica within the ITL SLO, at any measured context
    length (the shortest contexts decode fastest); the lowest-ITL point where none meets
    the SLO."""
    rates = []
    for context in sorted({p.context_tokens for p in profile.decode}):
        capacity = profile.decode_capacity(context, itl_slo_ms)
        rates.append((capacity or profile.lowest_itl_capacity(context)).tokens_per_s)
    return max(rates)


def lower_bound_gpu_hours(
    trace: Sequence[Request], profile: PerfProfile, itl_slo_ms: float, gpus_per_replica: int = 1
) -> float:
    """The work-conserving lower bound on GPU-hours: every prompt token prefilled at the
    best prefill rate, every output token decoded at the best decode rate within the ITL
    SLO, with no replica ever idle, starting or draining. No policy can use less.

    ``gpus_per_replica``: the profile's rates are per replica; a replica of several GPUs
    costs that many GPU-hours per hour.
    """
    input_tokens = sum(r.input_tokens for r in trace)
    output_tokens = sum(r.output_tokens for r in trace)
    seconds = input_tokens / best_prefill_tokens_per_s(profile) + output_tokens / (
        best_decode_tokens_per_s(profile, itl_slo_ms)
    )
    return seconds * gpus_per_replica / 3600.0


def queue_target(trace: Sequence[Request], profile: PerfProfile, slo: Slo) -> int:
    """Waiting requests per prefill replica that a careful operator would set as a target:
    as many prompts as one replica prefills in half the TTFT SLO at the trace's mean
    prefill time (the other half left for the prefill itself and bursts), at least one."""
    mean_prefill_ms = sum(profile.prefill_ms(r.input_tokens) for r in trace) / max(len(trace), 1)
    return max(1, math.floor(0.5 * slo.ttft_ms / max(mean_prefill_ms, 1e-9)))


def queued_tokens_target(
    trace: Sequence[Request], profile: PerfProfile, slo: Slo, batch_tokens: int
) -> int:
    """Queued prompt tokens per prefill replica for pdscaler's ``QueuedPrefillTokens``: one
    full prefill batch (``batch_tokens``), or the prompts of :func:`queue_target` at the
    trace's mean prompt length when that is more (long prompts: one exceeds a batch)."""
    mean_input = sum(r.input_tokens for r in trace) / max(len(trace), 1)
    return max(batch_tokens, math.floor(queue_target(trace, profile, slo) * mean_input))


def decode_concurrency(trace: Sequence[Request], profile: PerfProfile, slo: Slo) -> int:
    """Sequences one decode replica holds at its best operating point within the ITL SLO,
    at the trace's mean decode context (prompt + half the output), at least one."""
    n = max(len(trace), 1)
    context = sum(r.input_tokens + r.output_tokens / 2 for r in trace) / n
    return max(1, math.floor(decode_operating_point(profile, context, slo.itl_ms).concurrency))

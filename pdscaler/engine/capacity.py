"""Capacity-model sizing: how many replicas a pool needs, from load and a PerfProfile.

Pure functions of their arguments (no I/O, no clock). Each returns a fractional replica
count, which the caller rounds up, with a reason code and a message that shows the
arithmetic, so that the decision log can say why.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

from pdscaler.domain.profile import DecodeCapacity, PerfProfile
from pdscaler.domain.reasons import Reason

# Above this a queue's wait grows too fast for the model's small errors to stay small.
MAX_UTILIZATION = 0.95
# When one request alone misses the TTFT SLO, no utilisation meets it; size to keep the
# queueing delay no longer than half a service time instead.
UNREACHABLE_UTILIZATION = 0.5


@dataclass(frozen=True)
class CapacityEstimate:
    """Replicas needed (fractional; the caller rounds up), why, and the arithmetic.

    The message is written only when asked for: a tick sizes thousands of pools and
    keeps the words of the winning vote only.
    """

    replicas: float
    reason: str
    describe: Callable[[], str]

    @property
    def message(self) -> str:
        return self.describe()


def max_utilization(service_s: float, ttft_slo_s: float) -> float:
    """The highest utilisation of an M/D/1 replica whose mean TTFT stays within the SLO.

    With service time S and utilisation ρ the mean wait is ρS / (2(1 - ρ)); S + wait ≤ T
    gives ρ ≤ 2r / (1 + 2r) with r = (T - S) / S, capped at :data:`MAX_UTILIZATION`.
    Requires 0 < S < T; an infinite T (no SLO) gives the cap.
    """
    if math.isinf(ttft_slo_s):
        return MAX_UTILIZATION
    headroom = (ttft_slo_s - service_s) / service_s
    return min(2 * headroom / (1 + 2 * headroom), MAX_UTILIZATION)


def prefill_replicas(
    profile: PerfProfile,
    *,
    arrival_rate_per_s: float,
    mean_input_tokens: float,
    queued_prefill_tokens: float,
    ttft_slo_ms: float,
    drain_s: float | None = None,
) -> CapacityEstimate:
    """Prefill replicas for the arrivals plus enough to drain the backlog within the SLO,
    or within ``drain_s`` when that is longer (replicas asked for now serve only after the
    pool's cold start, so a backlog is spread over it rather than sized to vanish at once).

    Service time S = ``profile.prefill_ms(mean_input_tokens)``; each replica is an M/D/1
    queue run at :func:`max_utilization`, so steady replicas = λ·S / ρmax. The queued
    prefill tokens must drain within the TTFT SLO T: backlog replicas = queued tokens /
    (prefill tokens/s at the mean input length × T). When S ≥ T no number of replicas meets
    the SLO: the pool is sized at ρ = :data:`UNREACHABLE_UTILIZATION` plus the backlog, with
    reason ``SloUnreachable``; otherwise the reason is ``CapacityModel``.

    No arrivals and no backlog give 0 replicas (``mean_input_tokens`` may then be 0). An
    infinite SLO means none: ρmax is the cap and the backlog adds nothing. Raises ValueError
    for a negative or non-finite load, a non-positive or NaN SLO, or a non-positive
    ``mean_input_tokens`` under load.
    """
    _require_load(
        arrival_rate_per_s=arrival_rate_per_s,
        mean_input_tokens=mean_input_tokens,
        queued_prefill_tokens=queued_prefill_tokens,
    )
    _require_slo("ttft_slo_ms", ttft_slo_ms)
    if arrival_rate_per_s == 0 and queued_prefill_tokens == 0:
        return CapacityEstimate(
            0.0, Reason.CAPACITY_MODEL, lambda: "no load: 0 req/s, no queued tokens"
        )
    _require_positive("mean_input_tokens", mean_input_tokens)
    service_s = profile.prefill_ms(mean_input_tokens) / 1000.0
    slo_s = ttft_slo_ms / 1000.0
    reachable = service_s < slo_s
    rho = max_utilization(service_s, slo_s) if reachable else UNREACHABLE_UTILIZATION
    drain_tokens_per_s = profile.prefill_tokens_per_s(mean_input_tokens)
    steady = arrival_rate_per_s * service_s / rho
    drain = max(slo_s, drain_s or 0.0) if math.isfinite(slo_s) else slo_s
    replicas = steady + queued_prefill_tokens / (drain_tokens_per_s * drain)

    def arithmetic() -> str:
        return (
            f"λ {arrival_rate_per_s:.3g} req/s × S {service_s:.4g} s / ρmax {rho:.2f} "
            f"+ backlog {queued_prefill_tokens:.0f} tok / ({drain_tokens_per_s:.0f} tok/s × "
            f"{drain:.3g} s) = {replicas:.2f}"
        )

    def unreachable() -> str:
        return (
            f"TTFT SLO {ttft_slo_ms:.3g} ms is not above the {service_s * 1000:.4g} ms prefill "
            f"of one {mean_input_tokens:.0f}-token request: more replicas cannot meet it; "
            f"sized at ρ {rho:.2f}: {arithmetic()}"
        )

    if reachable:
        return CapacityEstimate(replicas, Reason.CAPACITY_MODEL, arithmetic)
    return CapacityEstimate(replicas, Reason.SLO_UNREACHABLE, unreachable)


def decode_replicas(
    profile: PerfProfile,
    *,
    output_tokens_per_s: float,
    running_requests: float,
    mean_context_tokens: float,
    itl_slo_ms: float,
    incoming_tokens_per_s: float = 0.0,
) -> CapacityEstimate:
    """Decode replicas to carry the output token rate and the running sequences.

    replicas = max(output tokens/s ÷ capacity tokens/s, running requests ÷ capacity
    concurrency) with the capacity from ``profile.decode_capacity`` at the mean context
    length and the ITL SLO (reason ``CapacityModel``). ``incoming_tokens_per_s`` is the
    output the requests the prefill pool is handing over will ask for (their rate × the
    mean output length): when it is higher than what decode produces now, it is the load
    to size for, before those requests arrive. When no operating point meets the
    SLO, the profile's lowest-ITL point at that context is used (reason ``SloUnreachable``).

    No output and no running requests give 0 replicas (``mean_context_tokens`` may then be
    0). An infinite SLO means none: the profile's highest-throughput point is used. Raises
    ValueError for a negative or non-finite load, a non-positive or NaN SLO, or a
    non-positive ``mean_context_tokens`` under load.
    """
    _require_load(
        output_tokens_per_s=output_tokens_per_s,
        running_requests=running_requests,
        mean_context_tokens=mean_context_tokens,
        incoming_tokens_per_s=incoming_tokens_per_s,
    )
    measured_tokens_per_s = output_tokens_per_s
    output_tokens_per_s = max(output_tokens_per_s, incoming_tokens_per_s)
    _require_slo("itl_slo_ms", itl_slo_ms)
    if output_tokens_per_s == 0 and running_requests == 0:
        return CapacityEstimate(0.0, Reason.CAPACITY_MODEL, lambda: "no load: 0 tok/s, 0 running")
    _require_positive("mean_context_tokens", mean_context_tokens)
    capacity, reason = _decode_capacity(
        profile, math.ceil(mean_context_tokens / CONTEXT_BUCKET) * CONTEXT_BUCKET, itl_slo_ms
    )
    replicas = max(
        output_tokens_per_s / capacity.tokens_per_s, running_requests / capacity.concurrency
    )

    def arithmetic() -> str:
        incoming = (
            f" (incoming from prefill; {measured_tokens_per_s:.0f} now)"
            if output_tokens_per_s > measured_tokens_per_s
            else ""
        )
        return (
            f"max({output_tokens_per_s:.0f} tok/s{incoming} / {capacity.tokens_per_s:.0f} tok/s, "
            f"{running_requests:.0f} running / {capacity.concurrency:.1f} per replica) = "
            f"{replicas:.2f} at context {mean_context_tokens:.0f} tok, "
            f"ITL {capacity.itl_ms:.3g} ms"
        )

    def unreachable() -> str:
        return (
            f"ITL SLO {itl_slo_ms:.3g} ms: no measured operating point at this context meets "
            f"it, and more replicas cannot; sized at the lowest-ITL point: {arithmetic()}"
        )

    if reason is Reason.CAPACITY_MODEL:
        return CapacityEstimate(replicas, reason, arithmetic)
    return CapacityEstimate(replicas, reason, unreachable)


def _require_load(**values: float) -> None:
    for name, value in values.items():
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")


def _require_slo(name: str, value: float) -> None:
    """An SLO is positive; +inf means there is none."""
    if not value > 0:  # also refuses NaN
        raise ValueError(f"{name} must be positive (or inf for none), got {value}")


def _require_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}")


# Contexts are rounded up to whole tokens before the profile is asked (a longer context
# only lowers capacity), so that pools with the same load shape share one answer.
CONTEXT_BUCKET = 1


@functools.lru_cache(maxsize=4096)
def _decode_capacity(
    profile: PerfProfile, context_tokens: float, itl_slo_ms: float
) -> tuple[DecodeCapacity, str]:
    capacity = profile.decode_capacity(context_tokens, itl_slo_ms)
    if capacity is None:
        return profile.lowest_itl_capacity(context_tokens), Reason.SLO_UNREACHABLE
    return capacity, Reason.CAPACITY_MODEL

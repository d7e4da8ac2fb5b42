"""Capacity-model sizing of prefill and decode pools, with the bundled H200 profile.

Hand arithmetic for the numbers below: a 2134-token prompt is a measured point, 49.968438 ms
of prefill at 42,707 tokens/s. At a 200 ms TTFT SLO, r = (200 - 49.97) / 49.97 = 3.0025, so
ρmax = 2r / (1 + 2r) = 0.8572. At context 2997 and a 10 ms ITL SLO one decode replica
carries 4825.3 tokens/s and 49.54 sequences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from pdscaler.engine.capacity import (
    MAX_UTILIZATION,
    decode_replicas,
    max_utilization,
    prefill_replicas,
)
from pdscaler.profiles import DEFAULT_PROFILE, load_profile

H200 = load_profile(DEFAULT_PROFILE)
SERVICE_S = 0.049968438  # prefill of 2134 tokens
DRAIN_TOKENS_PER_S = 2134 / SERVICE_S  # 42,707
RHO_AT_200_MS = 0.8572459


@dataclass(frozen=True)
class PrefillLoad:
    arrival_rate_per_s: float
    mean_input_tokens: float
    queued_prefill_tokens: float
    ttft_slo_ms: float


@dataclass(frozen=True)
class PrefillCase:
    name: str
    load: PrefillLoad
    replicas: float
    reason: str
    message: str  # a fragment of the message


PREFILL = [
    PrefillCase("steady arrivals", PrefillLoad(10, 2134, 0, 200),
                10 * SERVICE_S / RHO_AT_200_MS, "CapacityModel",
                "λ 10 req/s × S 0.04997 s / ρmax 0.86 + backlog 0 tok"),
    PrefillCase("arrivals and a backlog of 0.2 s × 10 replicas", PrefillLoad(10, 2134, 85_414, 200),
                10 * SERVICE_S / RHO_AT_200_MS + 85_414 / (DRAIN_TOKENS_PER_S * 0.2),
                "CapacityModel", "+ backlog 85414 tok / (42707 tok/s × 0.2 s) = 10.58"),
    PrefillCase("a backlog and no arrivals", PrefillLoad(0, 2134, 8541.4, 200),
                8541.4 / (DRAIN_TOKENS_PER_S * 0.2), "CapacityModel", "= 1.00"),
    PrefillCase("a loose SLO: utilisation capped at 0.95", PrefillLoad(10, 2134, 0, 10_000),
                10 * SERVICE_S / MAX_UTILIZATION, "CapacityModel", "ρmax 0.95"),
    PrefillCase("SLO below one request's prefill", PrefillLoad(10, 2134, 0, 40),
                10 * SERVICE_S / 0.5, "SloUnreachable",
                "TTFT SLO 40 ms is not above the 49.97 ms prefill of one 2134-token request"),
    PrefillCase("no SLO: the backlog adds nothing", PrefillLoad(10, 2134, 5000, math.inf),
                10 * SERVICE_S / MAX_UTILIZATION, "CapacityModel", "ρmax 0.95 + backlog 5000"),
    PrefillCase("zero load", PrefillLoad(0, 0, 0, 200), 0.0, "CapacityModel", "no load"),
]  # fmt: skip


@pytest.mark.parametrize("case", PREFILL, ids=lambda c: c.name)
def test_prefill_replicas(case: PrefillCase) -> None:
    load = case.load

    estimate = prefill_replicas(
        H200,
        arrival_rate_per_s=load.arrival_rate_per_s,
        mean_input_tokens=load.mean_input_tokens,
        queued_prefill_tokens=load.queued_prefill_tokens,
        ttft_slo_ms=load.ttft_slo_ms,
    )

    assert estimate.replicas == pytest.approx(case.replicas, rel=1e-5)
    assert estimate.reason == case.reason
    assert case.message in estimate.message


def test_prefill_replicas_grow_with_the_backlog() -> None:
    backlogs = [0, 1_000, 10_000, 100_000, 1_000_000]

    replicas = [
        prefill_replicas(
            H200,
            arrival_rate_per_s=12,
            mean_input_tokens=3000,
            queued_prefill_tokens=queued,
            ttft_slo_ms=200,
        ).replicas
        for queued in backlogs
    ]

    assert replicas == sorted(replicas)
    assert len(set(replicas)) == len(replicas)


def test_prefill_replicas_grow_as_the_slo_tightens() -> None:
    slos = [2000, 500, 200, 100, 60]

    replicas = [
        prefill_replicas(
            H200,
            arrival_rate_per_s=12,
            mean_input_tokens=2134,
            queued_prefill_tokens=0,
            ttft_slo_ms=slo,
        ).replicas
        for slo in slos
    ]

    assert replicas == sorted(replicas)


@pytest.mark.parametrize(
    ("service_s", "ttft_slo_s", "rho"),
    [(0.5, 1.0, 2 / 3), (1.0, 3.0, 0.8), (0.1, 1.0, 18 / 19), (0.01, 1.0, MAX_UTILIZATION)],
)
def test_max_utilization_keeps_the_mean_m_d_1_ttft_within_the_slo(
    service_s: float, ttft_slo_s: float, rho: float
) -> None:
    found = max_utilization(service_s, ttft_slo_s)

    assert found == pytest.approx(rho)
    mean_wait_s = found * service_s / (2 * (1 - found))
    assert service_s + mean_wait_s <= ttft_slo_s * (1 + 1e-9)


@dataclass(frozen=True)
class DecodeLoad:
    output_tokens_per_s: float
    running_requests: float
    mean_context_tokens: float
    itl_slo_ms: float


@dataclass(frozen=True)
class DecodeCase:
    name: str
    load: DecodeLoad
    replicas: float
    reason: str
    message: str  # a fragment of the message


DECODE = [
    DecodeCase("bound by tokens/s", DecodeLoad(9650.56, 50, 2997, 10), 2.0, "CapacityModel",
               "max(9651 tok/s / 4825 tok/s, 50 running / 49.5 per replica) = 2.00"),
    DecodeCase("bound by running sequences", DecodeLoad(1000, 200, 2997, 10), 200 / 49.54176,
               "CapacityModel", "200 running / 49.5 per replica) = 4.04"),
    DecodeCase("SLO below the fastest batch: the lowest-ITL point", DecodeLoad(1000, 2, 2997, 4),
               1000 / 223.73376, "SloUnreachable", "sized at the lowest-ITL point"),
    DecodeCase("no SLO: the highest-throughput point", DecodeLoad(10_000, 100, 2997, math.inf),
               10_000 / 7390.4536, "CapacityModel", "/ 7390 tok/s"),
    DecodeCase("zero load", DecodeLoad(0, 0, 0, 10), 0.0, "CapacityModel", "no load"),
]  # fmt: skip


@pytest.mark.parametrize("case", DECODE, ids=lambda c: c.name)
def test_decode_replicas(case: DecodeCase) -> None:
    load = case.load

    estimate = decode_replicas(
        H200,
        output_tokens_per_s=load.output_tokens_per_s,
        running_requests=load.running_requests,
        mean_context_tokens=load.mean_context_tokens,
        itl_slo_ms=load.itl_slo_ms,
    )

    assert estimate.replicas == pytest.approx(case.replicas, rel=1e-5)
    assert estimate.reason == case.reason
    assert case.message in estimate.message


def test_decode_replicas_grow_with_context_length() -> None:
    contexts = [350, 2997, 5644, 8291, 13585]

    replicas = [
        decode_replicas(
            H200,
            output_tokens_per_s=5000,
            running_requests=100,
            mean_context_tokens=context,
            itl_slo_ms=20,
        ).replicas
        for context in contexts
    ]

    assert replicas == sorted(replicas)


BAD_PREFILL = [
    ("negative arrivals", {"arrival_rate_per_s": -1.0}, "arrival_rate_per_s"),
    ("NaN arrivals", {"arrival_rate_per_s": math.nan}, "arrival_rate_per_s"),
    ("infinite backlog", {"queued_prefill_tokens": math.inf}, "queued_prefill_tokens"),
    ("negative input length", {"mean_input_tokens": -5.0}, "mean_input_tokens"),
    ("zero input length under load", {"mean_input_tokens": 0.0}, "mean_input_tokens"),
    ("zero SLO", {"ttft_slo_ms": 0.0}, "ttft_slo_ms"),
    ("NaN SLO", {"ttft_slo_ms": math.nan}, "ttft_slo_ms"),
]


@pytest.mark.parametrize(("name", "change", "field"), BAD_PREFILL, ids=[c[0] for c in BAD_PREFILL])
def test_bad_prefill_input_is_refused(name: str, change: dict[str, float], field: str) -> None:
    arguments = {
        "arrival_rate_per_s": 10.0,
        "mean_input_tokens": 2134.0,
        "queued_prefill_tokens": 0.0,
        "ttft_slo_ms": 200.0,
    } | change

    with pytest.raises(ValueError, match=field):
        prefill_replicas(H200, **arguments)


BAD_DECODE = [
    ("negative output rate", {"output_tokens_per_s": -1.0}, "output_tokens_per_s"),
    ("NaN running", {"running_requests": math.nan}, "running_requests"),
    ("zero context under load", {"mean_context_tokens": 0.0}, "mean_context_tokens"),
    ("negative SLO", {"itl_slo_ms": -10.0}, "itl_slo_ms"),
]


@pytest.mark.parametrize(("name", "change", "field"), BAD_DECODE, ids=[c[0] for c in BAD_DECODE])
def test_bad_decode_input_is_refused(name: str, change: dict[str, float], field: str) -> None:
    arguments = {
        "output_tokens_per_s": 1000.0,
        "running_requests": 10.0,
        "mean_context_tokens": 2997.0,
        "itl_slo_ms": 10.0,
    } | change

    with pytest.raises(ValueError, match=field):
        decode_replicas(H200, **arguments)

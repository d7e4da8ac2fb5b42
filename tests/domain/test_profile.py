"""PerfProfile: prefill time by input length, decode capacity within an ITL SLO, validation.

Numbers come from the bundled profile (Dynamo's measurements of Llama-3.1-8B FP8 on one
H200) where the behaviour is about real data, and from small hand-made profiles where the
arithmetic must be checked exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from pdscaler.domain.profile import DecodeCapacity, DecodePoint, PerfProfile, PrefillPoint
from pdscaler.profiles import DEFAULT_PROFILE, load_profile

H200 = load_profile(DEFAULT_PROFILE)
MAX_KV_TOKENS = 945_029


def tiny(max_kv_tokens: int | None = None) -> PerfProfile:
    """One decode curve at context 1000: ITL 5, 10, 20 ms at 1, 10, 30 sequences."""
    return PerfProfile(
        name="tiny",
        prefill=(PrefillPoint(100, 10.0), PrefillPoint(200, 15.0), PrefillPoint(400, 30.0)),
        decode=(
            DecodePoint(1000, 1, 5.0, 200.0),
            DecodePoint(1000, 10, 10.0, 1000.0),
            DecodePoint(1000, 30, 20.0, 1500.0),
        ),
        max_kv_tokens=max_kv_tokens,
        source="test",
    )


@dataclass(frozen=True)
class Prefill:
    name: str
    isl_tokens: float
    ttft_ms: float


PREFILL = [
    Prefill("a measured point", 2134, 49.968438),
    Prefill("the shortest measured point", 100, 19.525209),
    Prefill("the longest measured point", 16372, 375.482618),
    Prefill("halfway between 100 and 1117", 608.5, (19.525209 + 38.494131) / 2),
    Prefill("beyond the range: the quadratic fit", 20000, 488.5697),
    Prefill("just below the range: no cheaper per token than 100 tokens", 99, 19.525209 * 0.99),
    Prefill("well below the range: the quadratic fit", 50, 17.2616),
]


@pytest.mark.parametrize("case", PREFILL, ids=lambda c: c.name)
def test_prefill_time_by_input_length(case: Prefill) -> None:
    assert H200.prefill_ms(case.isl_tokens) == pytest.approx(case.ttft_ms, rel=1e-5)


def test_prefill_time_grows_beyond_the_measured_range() -> None:
    lengths = [16372, 16373, 20000, 32768, 131072]

    times = [H200.prefill_ms(n) for n in lengths]

    assert times == sorted(times)
    assert len(set(times)) == len(times)


def test_prefill_time_stays_positive_and_below_the_shortest_measurement() -> None:
    for isl_tokens in (0.001, 1, 10, 99.9):
        assert 0 < H200.prefill_ms(isl_tokens) <= H200.prefill_ms(100)


def test_prefill_tokens_per_s_is_length_over_time() -> None:
    assert H200.prefill_tokens_per_s(1117) == pytest.approx(29017.41, rel=1e-6)


@pytest.mark.parametrize("isl_tokens", [0, -1, math.nan, math.inf])
def test_prefill_time_needs_a_positive_length(isl_tokens: float) -> None:
    with pytest.raises(ValueError, match="isl_tokens must be a positive finite number"):
        H200.prefill_ms(isl_tokens)


def test_a_fit_with_fewer_than_three_points_is_a_line() -> None:
    profile = PerfProfile(
        name="two",
        prefill=(PrefillPoint(100, 10.0), PrefillPoint(200, 20.0)),
        decode=(DecodePoint(1000, 1, 5.0, 200.0),),
        max_kv_tokens=None,
        source="test",
    )

    assert profile.prefill_ms(400) == pytest.approx(40.0)


@dataclass(frozen=True)
class Decode:
    name: str
    context_tokens: float
    itl_slo_ms: float
    expected: DecodeCapacity | None


DECODE = [
    Decode("a measured context, the SLO between two batches", 2997, 10.0,
           DecodeCapacity(4825.278, 49.542, 10.0)),
    Decode("a measured context, the SLO beyond every batch", 2997, 50.0,
           DecodeCapacity(7390.454, 241.0, 31.797)),
    Decode("between two measured contexts", 4320.5, 15.0,
           DecodeCapacity(4523.667, 68.423, 15.0)),
    Decode("beyond the longest context: the nearest curve", 20000, 10.0,
           DecodeCapacity(1197.816, 12.294, 10.0)),
    Decode("far beyond: the KV cache holds 9.45 sequences", 100_000, 50.0,
           DecodeCapacity(962.388, MAX_KV_TOKENS / 100_000, 8.678)),
    Decode("below the fastest batch", 2997, 4.0, None),
    Decode("no SLO: the highest throughput", 2997, math.inf,
           DecodeCapacity(7390.454, 241.0, 31.797)),
]  # fmt: skip


@pytest.mark.parametrize("case", DECODE, ids=lambda c: c.name)
def test_decode_capacity_within_the_itl_slo(case: Decode) -> None:
    capacity = H200.decode_capacity(case.context_tokens, case.itl_slo_ms)

    if case.expected is None:
        assert capacity is None
        return
    assert capacity is not None
    assert capacity.tokens_per_s == pytest.approx(case.expected.tokens_per_s, rel=1e-4)
    assert capacity.concurrency == pytest.approx(case.expected.concurrency, rel=1e-4)
    assert capacity.itl_ms == pytest.approx(case.expected.itl_ms, rel=1e-4)


def test_between_two_contexts_capacity_lies_between_theirs() -> None:
    shorter = H200.decode_capacity(2997, 15.0)
    longer = H200.decode_capacity(5644, 15.0)
    between = H200.decode_capacity(4320.5, 15.0)

    assert shorter is not None
    assert longer is not None
    assert between is not None
    assert longer.tokens_per_s < between.tokens_per_s < shorter.tokens_per_s


@pytest.mark.parametrize(
    ("context_tokens", "itl_slo_ms"), [(1260, 30.0), (4320.5, 15.0), (7000, 20.0), (12000, 40.0)]
)
def test_capacity_is_what_the_itl_model_delivers(context_tokens: float, itl_slo_ms: float) -> None:
    """The simulator decodes at itl_ms: at the capacity's concurrency it meets the SLO."""
    capacity = H200.decode_capacity(context_tokens, itl_slo_ms)

    assert capacity is not None
    assert H200.itl_ms(context_tokens, capacity.concurrency) <= itl_slo_ms * (1 + 1e-9)
    assert capacity.itl_ms == pytest.approx(H200.itl_ms(context_tokens, capacity.concurrency))


@pytest.mark.parametrize("context_tokens", [100, 350, 1000, 2997, 4000, 9000, 13585, 30000])
def test_decode_capacity_never_falls_as_the_slo_is_relaxed(context_tokens: float) -> None:
    slos = [4.5 + 0.25 * i for i in range(200)]

    capacities = [H200.decode_capacity(context_tokens, slo) for slo in slos]

    found = [c.tokens_per_s for c in capacities if c is not None]
    assert found == sorted(found)
    assert found[-1] > 5 * found[0]
    for slo, capacity in zip(slos, capacities, strict=True):
        if capacity is not None:
            assert capacity.itl_ms <= slo
            assert capacity.concurrency <= MAX_KV_TOKENS / context_tokens


def test_decode_capacity_falls_with_context_length() -> None:
    contexts = [350, 1000, 2997, 5644, 8291, 10938, 13585]

    capacities = [H200.decode_capacity(c, 20.0) for c in contexts]

    tokens = [c.tokens_per_s for c in capacities if c is not None]
    assert len(tokens) == len(contexts)
    assert tokens == sorted(tokens, reverse=True)


def test_the_segment_is_followed_to_where_it_crosses_the_slo() -> None:
    assert tiny().decode_capacity(1000, 15.0) == DecodeCapacity(1250.0, 20.0, 15.0)


def test_the_kv_cache_caps_concurrency_at_its_best_point() -> None:
    # 15,000 KV tokens hold 15 sequences of 1000 tokens; on the segment from 10 to 30
    # sequences that is a quarter of the way: 1125 tok/s at 12.5 ms, better than the SLO
    # crossing (20 sequences) cut back to 15.
    capacity = tiny(max_kv_tokens=15_000).decode_capacity(1000, 15.0)

    assert capacity == DecodeCapacity(1125.0, 15.0, 12.5)


def test_without_a_kv_size_concurrency_is_not_capped() -> None:
    capacity = tiny(max_kv_tokens=None).decode_capacity(1_000_000, 50.0)

    assert capacity == DecodeCapacity(1500.0, 30.0, 20.0)


def test_lowest_itl_capacity_is_the_smallest_batch() -> None:
    assert H200.lowest_itl_capacity(2997) == DecodeCapacity(223.73375762472148, 1.0, 4.427375)


@pytest.mark.parametrize(
    ("context_tokens", "itl_slo_ms", "message"),
    [
        (0, 10, "context_tokens must be a positive finite number"),
        (math.nan, 10, "context_tokens must be a positive finite number"),
        (1000, 0, "itl_slo_ms must be positive"),
        (1000, math.nan, "itl_slo_ms must be positive"),
    ],
)
def test_decode_capacity_needs_positive_arguments(
    context_tokens: float, itl_slo_ms: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        H200.decode_capacity(context_tokens, itl_slo_ms)


@dataclass(frozen=True)
class Invalid:
    name: str
    prefill: tuple[PrefillPoint, ...]
    decode: tuple[DecodePoint, ...]
    max_kv_tokens: int | None
    message: str  # a fragment of the message


P1, P2 = PrefillPoint(100, 10.0), PrefillPoint(200, 15.0)
D1, D2 = DecodePoint(1000, 1, 5.0, 200.0), DecodePoint(1000, 10, 10.0, 1000.0)
INVALID = [
    Invalid("no prefill points", (), (D1,), None, "at least one prefill and one decode point"),
    Invalid("no decode points", (P1,), (), None, "at least one prefill and one decode point"),
    Invalid("a negative time", (PrefillPoint(100, -1.0),), (D1,), None,
            "prefill[0].ttft_ms must be a positive finite number, got -1.0"),
    Invalid("a NaN latency", (P1,), (DecodePoint(1000, 1, math.nan, 200.0),), None,
            "decode[0].itl_ms must be a positive finite number, got nan"),
    Invalid("prefill out of order", (P2, P1), (D1,), None,
            "prefill points must be strictly increasing in isl_tokens"),
    Invalid("a repeated prefill length", (P1, P1), (D1,), None, "strictly increasing"),
    Invalid("decode out of order", (P1,), (D2, D1), None,
            "decode points must be strictly increasing in context_tokens, then concurrency"),
    Invalid("a repeated decode point", (P1,), (D1, D1), None, "strictly increasing"),
    Invalid("contexts out of order", (P1,), (DecodePoint(2000, 1, 5.0, 200.0), D1), None,
            "strictly increasing"),
    Invalid("a zero KV size", (P1,), (D1,), 0, "max_kv_tokens must be positive, got 0"),
]  # fmt: skip


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.name)
def test_invalid_profile_is_refused(case: Invalid) -> None:
    with pytest.raises(ValueError, match="profile 'bad'") as raised:
        PerfProfile("bad", case.prefill, case.decode, case.max_kv_tokens, "test")

    assert case.message in str(raised.value)


def test_a_profile_needs_a_name() -> None:
    with pytest.raises(ValueError, match="needs a name"):
        PerfProfile("", (P1,), (D1,), None, "test")

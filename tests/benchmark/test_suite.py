"""The benchmark end to end on short slices of the public traces: sizes, bounds, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pdscaler.benchmark.sizing import (
    CHAT_SLO,
    LONG_CONTEXT_SLO,
    decode_operating_point,
    lower_bound_gpu_hours,
    rate_multiplier,
    static_peak_replicas,
    trace_slo,
)
from pdscaler.benchmark.suite import POLICIES, prepare, run_trace
from pdscaler.cli import main
from pdscaler.domain.profile import PerfProfile
from pdscaler.profiles import DEFAULT_PROFILE
from pdscaler.sim.cluster import SimConfig
from pdscaler.sim.traces import Request, load_trace, scale_rate, window
from tests.benchmark.conftest import AZURE_CONV, MOONCAKE_CONV


def test_each_trace_gets_its_slo() -> None:
    assert trace_slo(load_trace(AZURE_CONV)) == CHAT_SLO
    assert trace_slo(load_trace(MOONCAKE_CONV)) == LONG_CONTEXT_SLO


def test_the_rate_multiplier_makes_static_peak_need_16_replicas(profile: PerfProfile) -> None:
    trace = window(load_trace(AZURE_CONV), 0, 180)

    multiplier = rate_multiplier(trace, profile, CHAT_SLO)

    assert (
        max(static_peak_replicas(scale_rate(trace, multiplier), profile, CHAT_SLO).values()) >= 16
    )
    assert (
        max(static_peak_replicas(scale_rate(trace, multiplier - 1), profile, CHAT_SLO).values())
        < 16
    )


def test_static_peak_sizes_for_the_busiest_minute(profile: PerfProfile) -> None:
    quiet = [Request(i * 1.0, 1000, 100) for i in range(60)]
    busy = [Request(60 + i * 0.05, 1000, 100) for i in range(1200)]

    assert static_peak_replicas(quiet + busy, profile, CHAT_SLO) == static_peak_replicas(
        busy, profile, CHAT_SLO
    )
    assert static_peak_replicas(quiet, profile, CHAT_SLO) == {"prefill": 1, "decode": 1}


def test_the_lower_bound_is_below_every_policy(profile: PerfProfile, config: SimConfig) -> None:
    setup = prepare(AZURE_CONV, config, minutes=3, rate=4)

    result = run_trace(setup, POLICIES, config, DEFAULT_PROFILE)

    assert setup.lower_bound_gpu_hours == pytest.approx(
        lower_bound_gpu_hours(setup.requests, profile, setup.slo.itl_ms)
    )
    assert [m.policy for m in result.metrics] == list(POLICIES)
    for m in result.metrics:
        assert 0 < setup.lower_bound_gpu_hours < m.gpu_hours, m.policy
        assert m.vs_lower_bound > 1
        assert m.requests == len(setup.requests)


def test_bench_command_writes_json_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"

    code = main(["bench", str(AZURE_CONV), "--minutes", "2", "--rate", "2", "--out", str(out)])

    assert code == 0
    printed = capsys.readouterr().out
    assert all(policy in printed for policy in POLICIES)
    report = json.loads((out / "bench.json").read_text())
    (trace,) = report["traces"]
    assert trace["rateMultiplier"] == 2
    assert set(trace["policies"]) == set(POLICIES)
    assert trace["policies"]["static-peak"]["vs_static_peak"] == 1
    for name in ("timeline", "cost"):
        png = out / f"{AZURE_CONV.stem}-{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_command_refuses_unknown_policies(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["bench", str(AZURE_CONV), "--policies", "hpa,magic"])

    assert exit_.value.code == 2
    assert "magic" in capsys.readouterr().err


def test_bench_command_names_a_missing_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", str(tmp_path / "nope.csv"), "--out", str(tmp_path)]) == 1
    assert "nope.csv" in capsys.readouterr().err


@pytest.mark.parametrize("context", [350.0, 2997.0, 1260.0, 8000.0])
def test_the_decode_operating_point_holds_in_the_simulator(
    profile: PerfProfile, context: float
) -> None:
    point = decode_operating_point(profile, context, 30.0)
    model = profile.decode_capacity(context, 30.0)

    assert model is not None
    assert point.concurrency <= model.concurrency
    assert profile.itl_ms(context, point.concurrency) <= 30.0 + 1e-6
    if context in (350.0, 2997.0):  # measured contexts: both readings agree
        assert point.concurrency == pytest.approx(model.concurrency)

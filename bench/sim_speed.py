"""Simulator speed: wall seconds to replay one hour of the Azure conversation trace.

The trace runs at the rate multiplier ``pdscaler bench`` chooses for it (the smallest that
makes static-peak need 16 replicas in its larger pool), once under static-peak (the
simulator alone) and once under pdscaler (the simulator plus the real controller, engine
and SQLite audit every 5 s). A benchmark, not a test: it prints figures.

    .venv/bin/python bench/sim_speed.py [--trace PATH] [--policies static-peak,pdscaler]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pdscaler.benchmark.suite import prepare, run_policy
from pdscaler.profiles import DEFAULT_PROFILE, load_profile
from pdscaler.sim.cluster import SimConfig

# The repository and shared/ are siblings.
TRACE = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "traces"
    / "AzureLLMInferenceTrace_conv.csv"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument("--policies", default="static-peak,pdscaler")
    args = parser.parse_args()
    config = SimConfig(load_profile(DEFAULT_PROFILE))
    started = time.perf_counter()
    setup = prepare(args.trace, config)
    prepared_s = time.perf_counter() - started
    hours = setup.requests[-1].arrival_s / 3600.0
    print(
        f"{setup.name}: ×{setup.multiplier:g} rate, {len(setup.requests):,} requests over "
        f"{hours * 60:.1f} min; trace loaded, scaled and sized in {prepared_s:.1f} s"
    )
    for policy in args.policies.split(","):
        metrics = run_policy(policy, setup, config, DEFAULT_PROFILE)
        simulated_h = metrics.span_s / 3600.0
        print(
            f"  {policy:<12} {metrics.wall_s:6.1f} s for {simulated_h:.2f} simulated hours "
            f"(the trace and the drain): {metrics.wall_s / hours:6.1f} s per trace hour, "
            f"{len(setup.requests) / metrics.wall_s:,.0f} requests/s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

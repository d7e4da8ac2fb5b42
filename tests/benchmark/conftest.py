"""Shared inputs of the benchmark tests: the bundled profile and the public traces."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdscaler.domain.profile import PerfProfile
from pdscaler.profiles import DEFAULT_PROFILE, load_profile
from pdscaler.sim.cluster import SimConfig

# The repository and shared/ are siblings (CI copies shared/ beside the clone).
TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "traces"
AZURE_CONV = TRACES / "AzureLLMInferenceTrace_conv.csv"
MOONCAKE_CONV = TRACES / "conversation_trace.jsonl"


@pytest.fixture(scope="session")
def profile() -> PerfProfile:
    return load_profile(DEFAULT_PROFILE)


@pytest.fixture(scope="session")
def config(profile: PerfProfile) -> SimConfig:
    return SimConfig(profile)

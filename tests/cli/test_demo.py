"""The demo: the real service on a simulated cluster, replayed fast, from start to summary."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pdscaler.config import Settings
from pdscaler.demo import NAMESPACE, DemoOptions, run_demo
from pdscaler.domain.policy import Role
from pdscaler.store.db import Database
from pdscaler.store.decisions import DecisionFilter, DecisionStore
from pdscaler.store.policies import PolicyStore


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_demo_replays_the_trace_and_scales_through_the_burst(
    settings: Settings, db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings.model_copy(
        update={"api": settings.api.model_copy(update={"port": _free_port()})}
    )
    options = DemoOptions(speed=120, examples=Path("policies"), out=tmp_path)

    assert run_demo(settings, db, options, token=None) == 0

    out = capsys.readouterr().out
    assert "requests finished (0 still running)" in out
    assert "SLO attainment" in out
    assert (tmp_path / "demo.png").is_file()
    decisions = DecisionStore(db)
    page, _ = decisions.page(DecisionFilter(namespace=NAMESPACE, role=Role.PREFILL), limit=1000)
    sizes = [d.record.current_replicas or 0 for d in reversed(page)]
    assert max(sizes) > sizes[0]  # grew for the burst ...
    assert sizes[-1] < max(sizes)  # ... and shrank after it
    assert {d.record.policy_namespace for d in page} == {NAMESPACE}  # examples not run
    assert len(PolicyStore(db).all()) > 1  # the examples are there to browse

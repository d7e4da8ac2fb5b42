"""Wall-clock steps (NTP, a VM resumed) between ticks: windows run on steady time and
behave as if nothing happened; decision rows record wall time; samples stamped in wall
time stay fresh."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from pdscaler.control.clock import FakeClock
from pdscaler.domain.policy import Role
from pdscaler.domain.reasons import Reason
from pdscaler.store.db import Database
from pdscaler.store.decisions import DecisionFilter
from tests.control.harness import Harness

P, D = Role.PREFILL, Role.DECODE
MINUTE = timedelta(minutes=1)


def _burst_then_quiet(
    h: Harness, jump: timedelta, name: str, walls: list[datetime] | None = None
) -> list[int]:
    """Two busy minutes (prefill grows to 8), a wall-clock step of ``jump``, then quiet:
    the default 300 s scale-down window decides when the pool comes down."""
    h.add_policy(name=name, prefill=2)
    sizes = []
    for minute, queued in enumerate([200_000, 200_000, 0, 0, 0, 0, 0, 0, 0]):
        if minute == 2:
            h.clock.jump(jump)
        h.observe(P, name, queuedPrefillTokens=queued)  # stamped with the wall clock
        h.observe(D, name, kvCacheUtilization=0.75)
        if walls is not None:
            walls.append(h.clock.now())
        h.tick(MINUTE)
        sizes.append(h.replicas(P, name))
    return sizes


@pytest.mark.parametrize("jump", [timedelta(hours=1), -timedelta(hours=1)])
def test_a_wall_clock_step_neither_cuts_nor_stretches_the_scale_down_window(
    db: Database, clock: FakeClock, jump: timedelta
) -> None:
    steady = _burst_then_quiet(Harness(db, FakeClock(clock.now())), timedelta(0), "steady")
    h = Harness(db, FakeClock(clock.now() + timedelta(days=1)))

    walls: list[datetime] = []
    stepped = _burst_then_quiet(h, jump, "stepped", walls)

    assert stepped == steady  # forward: not cut short; backward: not held an hour more
    assert steady[2:6] == [8, 8, 8, 8]  # held within the window
    assert steady[-1] < 8  # and down after it
    rows, _ = h.decisions.page(DecisionFilter(policy="stepped", role=P), limit=100)
    assert sorted(r.record.decided_at for r in rows) == sorted(walls)  # rows: wall time
    # the samples, stamped with the wall clock, stayed fresh after the step
    assert all(Reason.METRICS_OK in {s.reason for s in r.record.steps} for r in rows)

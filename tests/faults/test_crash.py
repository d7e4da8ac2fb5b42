"""Crash consistency: pdscaler killed with SIGKILL at each point of a tick, then started
again against the same database and API server.

Expected at every point: the decisions of the killed tick end up with a final status that
matches what the target runs (applied if the write happened, abandoned otherwise, each
with its reason), the restarted pdscaler's history counts the write that happened, and
no scale change is made twice.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pdscaler.domain.decision import DecisionStatus
from pdscaler.domain.policy import Role, parse_policy
from pdscaler.domain.signals import PoolKey
from pdscaler.store import migrate
from pdscaler.store.db import Database, create_db_engine
from pdscaler.store.decisions import DecisionFilter
from pdscaler.store.policies import PolicyStore
from tests.conftest import TempPostgres
from tests.factories import policy_doc
from tests.faults.crash_child import NS, POLICY, controller
from tests.kube.emulator import ApiServerEmulator

REPO = Path(__file__).resolve().parents[2]
PREFILL, DECODE = f"{POLICY}-prefill", f"{POLICY}-decode"
# point -> the status of the killed tick's prefill decision once reconciled
POINTS = {
    "record": DecisionStatus.ABANDONED,  # killed before the write
    "write": DecisionStatus.APPLIED,  # killed after the write, before its outcome
    "finish": DecisionStatus.APPLIED,  # killed after everything was recorded
}


@pytest.fixture(params=["postgres", "sqlite"])
def db_url(request: pytest.FixtureRequest, temp_postgres: TempPostgres, tmp_path: Path) -> str:
    url = temp_postgres.create() if request.param == "postgres" else f"sqlite:///{tmp_path}/c.db"
    db = Database(create_db_engine(url))
    migrate.upgrade(db.engine)
    doc = policy_doc(name=POLICY)
    doc["spec"]["prefill"]["scaleTargetRef"]["name"] = PREFILL
    doc["spec"]["decode"]["scaleTargetRef"]["name"] = DECODE
    PolicyStore(db).create(parse_policy(doc), author="t", comment="", now=datetime.now(UTC))
    db.dispose()
    return url


@pytest.fixture
def emulator() -> Iterator[ApiServerEmulator]:
    with ApiServerEmulator() as server:
        for name in (PREFILL, DECODE):
            server.add_workload("apps/v1", "Deployment", NS, name, 2, {"app": name})
        yield server


def scale_writes(emulator: ApiServerEmulator) -> list[str]:
    return [path for method, path, _ in emulator.requests
            if method == "PUT" and path.endswith("/scale")]  # fmt: skip


@pytest.mark.parametrize("point", list(POINTS))
def test_a_tick_killed_at_any_point_is_reconciled_and_nothing_is_written_twice(
    db_url: str, emulator: ApiServerEmulator, point: str
) -> None:
    child = subprocess.run(
        [sys.executable, "-m", "tests.faults.crash_child", db_url, emulator.base_url, point],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert child.returncode == -9, child.stderr  # killed, not finished
    written_by_child = len(scale_writes(emulator))
    assert written_by_child == (0 if point == "record" else 1)

    restarted, decisions, _actuator = controller(db_url, emulator.base_url)
    restarted.restore()
    page, _ = decisions.page(DecisionFilter(role=Role.PREFILL), limit=10)
    (killed,) = [d.record for d in page]
    target = emulator.replicas(NS, "Deployment", PREFILL)

    assert killed.status is POINTS[point]
    assert killed.error is None or killed.error.startswith("Reconciled: ")
    assert (target == killed.desired_replicas) is (killed.status is DecisionStatus.APPLIED)
    history = restarted.history(PoolKey(NS, POLICY, Role.PREFILL))
    assert bool(history.scale_events) is (killed.status is DecisionStatus.APPLIED)

    restarted.tick()  # the same load: the pool is (or now gets) the size decided once

    assert len(scale_writes(emulator)) == 1  # one write in all, whichever process made it
    assert emulator.replicas(NS, "Deployment", PREFILL) == killed.desired_replicas
    page, _ = decisions.page(DecisionFilter(role=Role.PREFILL), limit=10)
    assert all(d.record.status is not DecisionStatus.PENDING for d in page)

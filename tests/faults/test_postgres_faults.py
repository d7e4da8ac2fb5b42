"""Postgres stopped, killed and started again under a running pdscaler (a private cluster
of this module's own, so the shared server is never touched).

Expected in each case:

- Postgres down at a tick (stopped between two ticks, or killed after the tick read its
  policies and before it wrote its decision rows): the tick writes no /scale, its report
  says it was not audited, and the loop reports itself unhealthy ("could not write its
  audit rows"). The API answers 503 ``{"code": "Unavailable", ...}`` naming the database
  (for a read route and for /readyz), never a 500. Postgres started again, the same loop
  and app, with no restart, recover by themselves: the next tick audits and writes the
  change once, and the API answers 200.
- Postgres killed mid-tick, after the /scale write and before its outcome was recorded:
  the write stands, its row stays pending; once Postgres is back, the start-up
  reconciliation marks it applied, and the next tick writes nothing again.
- A policy PUT while Postgres is down (down before the request, or killed inside the
  change's transaction): 503, and once Postgres is back the policy is at the version it
  was, with no trace of the change; the same PUT then succeeds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pdscaler import wiring
from pdscaler.api.app import create_app
from pdscaler.config import Settings
from pdscaler.control.clock import FakeClock
from pdscaler.control.scheduler import Loop
from pdscaler.domain.decision import DecisionStatus
from pdscaler.domain.policy import Role
from pdscaler.store import migrate
from pdscaler.store import policies as policy_store
from pdscaler.store.db import Database, create_db_engine
from pdscaler.store.decisions import DecisionFilter, StoredDecision
from pdscaler.store.models import Base
from tests.conftest import auth
from tests.control.harness import INTERVAL, NS, Harness
from tests.factories import policy_doc
from tests.faults.private_postgres import Missing, PrivatePostgres

P, D = Role.PREFILL, Role.DECODE
POLICY_URL = f"/v1/policies/{NS}/llama"


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivatePostgres]:
    try:
        server = PrivatePostgres.create()
    except Missing as e:
        pytest.skip(str(e))
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="module")
def _migrated(cluster: PrivatePostgres) -> Iterator[Database]:
    db = Database(create_db_engine(cluster.create_database("pdscaler")))
    migrate.upgrade(db.engine)
    yield db
    db.dispose()


@pytest.fixture
def db(cluster: PrivatePostgres, _migrated: Database) -> Iterator[Database]:
    """The private cluster's migrated database, empty; running again after each test."""
    yield _migrated
    if not cluster.running():
        cluster.start()
    with _migrated.engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())


def _decisions(h: Harness) -> list[StoredDecision]:
    page, _ = h.decisions.page(DecisionFilter(), limit=100)
    return page


def _assert_unavailable(response: Any) -> None:
    """A 503 with the error body naming the database: not a 500, no traceback."""
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["code"] == "Unavailable"
    assert "database" in body["message"]
    assert "Traceback" not in response.text
    assert response.headers["Retry-After"]


def _stop_before(h: Harness, cluster: PrivatePostgres, mp: pytest.MonkeyPatch) -> None:
    cluster.stop("fast")


def _kill_before_the_audit(h: Harness, cluster: PrivatePostgres, mp: pytest.MonkeyPatch) -> None:
    record_many = h.decisions.record_many

    def killed_first(*args: Any, **kwargs: Any) -> None:
        cluster.stop("immediate")
        record_many(*args, **kwargs)

    mp.setattr(h.decisions, "record_many", killed_first)


# where Postgres goes down -> how the fault is put in before the tick
DOWN_AT: dict[str, Callable[[Harness, PrivatePostgres, pytest.MonkeyPatch], None]] = {
    "stopped between ticks": _stop_before,
    "killed before the decision rows": _kill_before_the_audit,
}


@pytest.mark.parametrize("down_at", list(DOWN_AT))
def test_no_action_while_the_audit_cannot_be_written_and_the_loop_recovers(
    db: Database,
    cluster: PrivatePostgres,
    settings: Settings,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    down_at: str,
) -> None:
    h = Harness(db, clock)
    h.add_policy(prefill=2)
    loop = Loop(h.controller, INTERVAL, clock)
    services = wiring.build_services(settings, db, clock, h.policies, h.decisions, loop)
    client = TestClient(create_app(services, max_body_bytes=settings.api.max_body_bytes))
    h.observe(P, queuedPrefillTokens=80_000)
    h.observe(D, kvCacheUtilization=0.75)
    loop.run_once()  # healthy: prefill 2 -> 5
    assert [w.replicas for w in h.actuator.writes] == [5]

    with monkeypatch.context() as mp:
        DOWN_AT[down_at](h, cluster, mp)
        clock.advance(INTERVAL)
        h.observe(P, queuedPrefillTokens=120_000)  # due: 5 -> 8
        h.observe(D, kvCacheUtilization=0.75)
        loop.run_once()
    down_report, down_health = h.controller.last_tick, loop.health()
    down_list = client.get("/v1/policies", headers=auth("viewer"))
    down_ready = client.get("/readyz")

    cluster.start()
    clock.advance(INTERVAL)
    h.observe(P, queuedPrefillTokens=120_000)
    h.observe(D, kvCacheUtilization=0.75)
    loop.run_once()  # the same loop, the same database handle: nothing restarted
    up_report, up_health = h.controller.last_tick, loop.health()
    up_list = client.get("/v1/policies", headers=auth("viewer"))
    up_ready = client.get("/readyz")

    assert down_report is not None
    assert down_report.audited is False
    assert down_report.writes == 0
    assert down_health.healthy is False
    assert "could not write its audit rows" in down_health.message
    _assert_unavailable(down_list)
    _assert_unavailable(down_ready)

    assert up_report is not None
    assert up_report.audited is True
    assert up_report.writes == 1
    assert [w.replicas for w in h.actuator.writes] == [5, 8]  # nothing while down, once after
    assert up_health.healthy is True
    assert up_list.status_code == 200
    assert [p["metadata"]["name"] for p in up_list.json()["items"]] == ["llama"]
    assert up_ready.status_code == 200, up_ready.text
    rows = _decisions(h)
    assert len(rows) == 4  # two ticks of two pools: the tick while down left none
    assert all(r.record.status is not DecisionStatus.PENDING for r in rows)


def test_killed_before_the_outcome_the_write_is_reconciled_once(
    db: Database, cluster: PrivatePostgres, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(db, clock)
    h.add_policy(prefill=2)
    h.observe(P, queuedPrefillTokens=80_000)
    h.observe(D, kvCacheUtilization=0.75)
    finish_many = h.decisions.finish_many

    def killed_first(*args: Any, **kwargs: Any) -> None:
        cluster.stop("immediate")
        finish_many(*args, **kwargs)

    with monkeypatch.context() as mp:
        mp.setattr(h.decisions, "finish_many", killed_first)
        killed = h.tick()
    cluster.start()
    left = h.last(P).record.status
    h.controller.restore()  # the start-up reconciliation, on the same controller
    reconciled = h.last(P).record
    h.observe(P, queuedPrefillTokens=80_000)
    h.observe(D, kvCacheUtilization=0.75)
    after = h.tick()

    assert (killed.audited, killed.writes) == (True, 1)  # the rows were written, then /scale
    assert left is DecisionStatus.PENDING
    assert reconciled.status is DecisionStatus.APPLIED
    assert reconciled.error is None or reconciled.error.startswith("Reconciled: ")
    assert after.writes == 0
    assert [w.replicas for w in h.actuator.writes] == [5]  # written once in all
    assert h.replicas(P) == 5
    assert all(r.record.status is not DecisionStatus.PENDING for r in _decisions(h))


def _kill_inside_the_change(cluster: PrivatePostgres, mp: pytest.MonkeyPatch) -> None:
    write_version = policy_store._write_version

    def killed_first(*args: Any, **kwargs: Any) -> Any:
        cluster.stop("immediate")  # the row is read and locked; the new version not written
        return write_version(*args, **kwargs)

    mp.setattr(policy_store, "_write_version", killed_first)


# where Postgres goes down -> how the fault is put in before the PUT
PUT_DOWN_AT: dict[str, Callable[[PrivatePostgres, pytest.MonkeyPatch], None]] = {
    "stopped before the request": lambda cluster, _mp: cluster.stop("fast"),
    "killed inside the change's transaction": _kill_inside_the_change,
}


@pytest.mark.parametrize("down_at", list(PUT_DOWN_AT))
def test_a_policy_put_while_postgres_is_down_is_503_and_writes_nothing(
    db: Database,
    cluster: PrivatePostgres,
    settings: Settings,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    down_at: str,
) -> None:
    editor, viewer = auth("editor"), auth("viewer")
    client = TestClient(wiring.build_app(settings, db, clock))
    created = client.post("/v1/policies", json=policy_doc(), headers=editor)
    assert created.status_code == 201, created.text
    changed = policy_doc({"spec": {"prefill": {"maxReplicas": 12}}})

    with monkeypatch.context() as mp:
        PUT_DOWN_AT[down_at](cluster, mp)
        down_put = client.put(POLICY_URL, json=changed, headers=editor)
    cluster.start()
    after = client.get(POLICY_URL, headers=viewer)
    versions = client.get(f"{POLICY_URL}/versions", headers=viewer)
    retried = client.put(POLICY_URL, json=changed, headers=editor)

    _assert_unavailable(down_put)
    assert after.status_code == 200
    assert after.json()["metadata"]["resourceVersion"] == "1"
    assert after.json()["spec"]["prefill"]["maxReplicas"] == 8
    assert [v["version"] for v in versions.json()["items"]] == [1]
    assert retried.status_code == 200, retried.text
    assert retried.json()["metadata"]["resourceVersion"] == "2"

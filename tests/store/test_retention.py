"""The decision log only grows under the service's own role; retention is an explicit job
that deletes what is older than an age and records that it did."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from pdscaler.control.clock import FakeClock
from pdscaler.domain.decision import DecisionStatus
from pdscaler.domain.errors import InvalidInput
from pdscaler.domain.policy import Role, parse_policy
from pdscaler.domain.signals import PoolKey
from pdscaler.store import migrate
from pdscaler.store.db import Database, create_db_engine
from pdscaler.store.decisions import DecisionFilter, DecisionStore, Outcome
from pdscaler.store.forecasts import ForecastModelRecord, ForecastModelStore
from pdscaler.store.models import RetentionRunRow
from pdscaler.store.policies import PolicyStore
from pdscaler.store.retention import prune
from tests.conftest import POSTGRES_ADMIN_URL
from tests.factories import decision, policy_doc


def _seed(db: Database, clock: FakeClock, ages_days: list[float]) -> None:
    PolicyStore(db).create(parse_policy(policy_doc()), author="t", comment="", now=clock.now())
    DecisionStore(db).record_many(
        [decision(clock.now() - timedelta(days=age)) for age in ages_days]
    )


def test_retention_deletes_only_what_is_older_and_records_the_run(
    db: Database, clock: FakeClock
) -> None:
    _seed(db, clock, [0.5, 2, 40, 91, 200])

    run = prune(db, timedelta(days=30), now=clock.now(), actor="ops@host", batch=1)

    left, _ = DecisionStore(db).page(DecisionFilter(), limit=10)
    assert run.deleted == 3
    assert len(left) == 2
    assert all(d.record.decided_at >= run.cutoff for d in left)
    with db.transaction() as session:
        (recorded,) = session.query(RetentionRunRow).all()
    assert (recorded.deleted, recorded.actor, recorded.cutoff) == (3, "ops@host", run.cutoff)


def test_retention_refuses_to_cut_into_the_last_day(db: Database, clock: FakeClock) -> None:
    _seed(db, clock, [0.1, 0.5])

    with pytest.raises(InvalidInput, match="at least 1 day"):
        prune(db, timedelta(hours=12), now=clock.now(), actor="ops")

    left, _ = DecisionStore(db).page(DecisionFilter(), limit=10)
    assert len(left) == 2


# -- the grant set (Postgres) --------------------------------------------------------------


@pytest.fixture
def login_as(backend: str, db: Database) -> Iterator[object]:
    """Logins of this test, each a member of one of the migration's group roles."""
    if backend != "postgres":
        pytest.skip("SQLite has no roles")
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    made: list[str] = []

    def login(group: str) -> Database:
        name = f"pdscaler_login_{uuid.uuid4().hex[:8]}"
        with admin.connect() as connection:
            connection.execute(text(f"CREATE ROLE {name} LOGIN IN ROLE {group}"))
        made.append(name)
        url = make_url(str(db.engine.url.render_as_string(hide_password=False)))
        return Database(create_db_engine(url.set(username=name).render_as_string()))

    yield login
    with admin.connect() as connection:
        for name in made:
            connection.execute(text(f"DROP ROLE IF EXISTS {name}"))
    admin.dispose()


def test_the_service_role_runs_the_service_but_cannot_delete_decisions(
    login_as: object, db: Database, clock: FakeClock
) -> None:
    service = login_as("pdscaler_service")  # type: ignore[operator]
    migrate.require_head(service.engine)
    policies, decisions = PolicyStore(service), DecisionStore(service)
    policies.create(parse_policy(policy_doc()), author="t", comment="", now=clock.now())
    record = decision(clock.now())
    decisions.record_many([record])
    decisions.finish_many([Outcome(record.tick_id, Role.PREFILL, DecisionStatus.APPLIED)],
                          now=clock.now())  # fmt: skip
    ForecastModelStore(service).record([ForecastModelRecord(
        PoolKey("inference", "llama", Role.PREFILL), "arrivalRate", "holt", clock.now(),
        clock.now(), {"params": {}})])  # fmt: skip
    policies.delete("inference", "llama", expected_version=None, author="t", comment="",
                    now=clock.now())  # fmt: skip

    for statement in (
        "DELETE FROM decisions",
        "TRUNCATE decisions",
        "DELETE FROM policy_versions",
        "UPDATE alembic_version SET version_num='x'",
    ):
        with pytest.raises(DBAPIError, match="permission denied"), service.engine.begin() as c:
            c.execute(text(statement))  # fmt: skip
    with pytest.raises(DBAPIError, match="permission denied"):
        prune(service, timedelta(days=1), now=clock.now() + timedelta(days=2), actor="svc")
    assert len(decisions.page(DecisionFilter(), limit=10)[0]) == 1
    service.dispose()


def test_the_retention_role_can_prune(login_as: object, db: Database, clock: FakeClock) -> None:
    _seed(db, clock, [10])
    retention = login_as("pdscaler_retention")  # type: ignore[operator]

    run = prune(retention, timedelta(days=1), now=clock.now(), actor="ops")

    assert run.deleted == 1
    retention.dispose()

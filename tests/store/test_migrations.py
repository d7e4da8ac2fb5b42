"""Alembic owns the schema: it goes up, down and up again on both backends, and the ORM
models never drift from what the migrations create."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from pdscaler.domain.errors import SchemaOutOfDate
from pdscaler.store import migrate
from pdscaler.store.db import create_db_engine
from pdscaler.store.models import Base
from tests.conftest import TempPostgres

TABLES = {"policies", "policy_versions", "decisions"}


@pytest.fixture
def fresh_engine(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty database of its own, since these tests move the schema around."""
    if backend == "postgres":
        server: TempPostgres = request.getfixturevalue("temp_postgres")
        url = server.create()
    else:
        url = f"sqlite:///{tmp_path / 'fresh.db'}"
    engine = create_db_engine(url)
    yield engine
    engine.dispose()


def test_up_down_up(fresh_engine: Engine) -> None:
    migrate.upgrade(fresh_engine)
    assert set(inspect(fresh_engine).get_table_names()) >= TABLES
    assert migrate.current_revision(fresh_engine) == migrate.head_revision()

    migrate.downgrade(fresh_engine, "base")
    assert not TABLES & set(inspect(fresh_engine).get_table_names())
    assert migrate.current_revision(fresh_engine) is None

    migrate.upgrade(fresh_engine)
    assert set(inspect(fresh_engine).get_table_names()) >= TABLES


def test_models_match_the_migrated_schema(fresh_engine: Engine) -> None:
    migrate.upgrade(fresh_engine)

    with fresh_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)

    assert differences == []


def test_empty_or_old_schema_is_refused_with_the_fix(fresh_engine: Engine) -> None:
    with pytest.raises(SchemaOutOfDate, match="pdscaler db upgrade"):
        migrate.require_head(fresh_engine)

    migrate.upgrade(fresh_engine)
    migrate.require_head(fresh_engine)


def test_replicas_that_upgrade_together_all_succeed(temp_postgres: TempPostgres) -> None:
    """Two pods of a fresh install run ``pdscaler db upgrade`` at the same moment."""
    url = temp_postgres.create()
    code = ("import sys; from pdscaler.store import migrate; from pdscaler.store.db import "
            "create_db_engine; migrate.upgrade(create_db_engine(sys.argv[1]))")  # fmt: skip
    runs = [subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True)
            for _ in range(4)]  # fmt: skip

    failures = [err for run in runs for err in [run.communicate(timeout=120)[1]] if run.returncode]

    assert failures == []
    engine = create_db_engine(url)
    assert set(inspect(engine).get_table_names()) >= TABLES
    engine.dispose()

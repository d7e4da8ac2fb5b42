"""Shared fixtures. Storage tests run twice: on the real Postgres server and on SQLite.

Each test run creates its own Postgres database (dropped at the end) and each test starts
from empty tables, so tests neither see nor leave anything on the shared server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from pdscaler import wiring
from pdscaler.api.auth import token_digest
from pdscaler.config import Settings, load_settings
from pdscaler.control.clock import FakeClock
from pdscaler.store import migrate
from pdscaler.store.db import Database, create_db_engine
from pdscaler.store.models import Base

REPO = Path(__file__).resolve().parents[1]
POLICIES = REPO / "policies"
POSTGRES_ADMIN_URL = os.environ.get(
    "PDSCALER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
TOKENS = {"viewer": "tok-viewer", "editor": "tok-editor", "admin": "tok-admin"}


class TempPostgres:
    """Creates and drops throw-away databases on the Postgres server."""

    def __init__(self, admin_url: str) -> None:
        self._admin: Engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self._url = make_url(admin_url)
        self._created: list[str] = []

    def create(self) -> str:
        name = f"pdscaler_test_{uuid.uuid4().hex[:12]}"
        with self._admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        self._created.append(name)
        return self._url.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with self._admin.connect() as connection:
            for name in self._created:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self._admin.dispose()


@pytest.fixture(scope="session")
def temp_postgres() -> Iterator[TempPostgres]:
    server = TempPostgres(POSTGRES_ADMIN_URL)
    try:
        yield server
    finally:
        server.drop_all()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'pdscaler.db'}"


@pytest.fixture(scope="session", params=["postgres", "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend under test; storage tests run once on each."""
    return str(request.param)


@pytest.fixture(scope="session")
def _migrated(backend: str, request: pytest.FixtureRequest) -> Iterator[Database]:
    url = (
        request.getfixturevalue("temp_postgres").create()
        if backend == "postgres"
        else request.getfixturevalue("sqlite_url")
    )
    db = Database(create_db_engine(url))
    migrate.upgrade(db.engine)
    yield db
    db.dispose()


@pytest.fixture
def db(_migrated: Database) -> Iterator[Database]:
    """A migrated database with empty tables."""
    yield _migrated
    with _migrated.engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    tokens = [
        {"name": f"{role}-user", "role": role, "sha256": token_digest(token)}
        for role, token in TOKENS.items()
    ]
    return load_settings(data_dir=tmp_path, api={"tokens": tokens, "cursor_secret": "s" * 32})


@pytest.fixture
def client(settings: Settings, db: Database, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(wiring.build_app(settings, db, clock), raise_server_exceptions=False) as c:
        yield c


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}

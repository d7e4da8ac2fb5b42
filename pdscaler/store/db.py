"""The database handle: one engine, one session factory, errors translated at the edge."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from pdscaler.domain.errors import Unavailable

log = logging.getLogger(__name__)


def create_db_engine(
    url: str,
    *,
    pool_size: int = 5,
    connect_timeout: timedelta = timedelta(seconds=5),
    echo: bool = False,
) -> Engine:
    """Build (but do not connect) an engine tuned for the dialect in ``url``. ``echo`` logs
    every statement at INFO through the root logger's handler (as every other record:
    formatted and redacted), not through a handler of SQLAlchemy's own on stdout."""
    if echo:
        logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": connect_timeout.total_seconds(), "check_same_thread": False},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"connect_timeout": max(1, int(connect_timeout.total_seconds()))},
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    # Let SQLAlchemy, not the driver, decide when transactions begin (see _sqlite_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    # A writing transaction takes the write lock up front (BEGIN IMMEDIATE). Otherwise two
    # writers could both read, and the second would fail on upgrading its snapshot instead
    # of waiting for the first: a spurious error where a wait, then a clean Conflict, is due.
    write = connection.get_execution_options().get(_WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


_WRITE = "pdscaler_write"


class Database:
    """Transactions over one engine. A lost connection surfaces as :class:`Unavailable`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def transaction(self, *, write: bool = False) -> Iterator[Session]:
        """One transaction: committed if the block returns, rolled back if it raises.

        ``write`` declares that the block writes, so SQLite takes its write lock first.
        """
        try:
            with self._sessions.begin() as session:
                if write:
                    session.connection(execution_options={_WRITE: True})
                yield session
        except DBAPIError as e:
            if e.connection_invalidated:
                raise Unavailable(f"database connection lost: {first_line(e)}") from e
            if _missing_schema(e):
                # The schema was moved under a running service (a downgrade, a restore).
                log.error("database schema does not match this pdscaler: %s", first_line(e))
                raise Unavailable(
                    "the database schema does not match this pdscaler: run `pdscaler db upgrade`"
                ) from e
            if isinstance(e, OperationalError):
                raise Unavailable(f"database unavailable: {first_line(e)}") from e
            raise

    def ping(self) -> None:
        with self.transaction() as session:
            session.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def _missing_schema(e: DBAPIError) -> bool:
    code = getattr(e.orig, "sqlstate", None)  # Postgres: undefined table or column
    text_ = str(e.orig)
    return code in ("42P01", "42703") or text_.startswith(("no such table", "no such column"))


def first_line(e: Exception) -> str:
    return str(getattr(e, "orig", e)).strip().splitlines()[0] if str(e) else type(e).__name__

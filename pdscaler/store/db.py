"""The database handle: one engine, one session factory, errors translated at the edge."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from pdscaler.domain.errors import Unavailable


def create_db_engine(
    url: str,
    *,
    pool_size: int = 5,
    connect_timeout: timedelta = timedelta(seconds=5),
    echo: bool = False,
) -> Engine:
    """Build (but do not connect) an engine tuned for the dialect in ``url``."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"timeout": connect_timeout.total_seconds(), "check_same_thread": False},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"connect_timeout": max(1, int(connect_timeout.total_seconds()))},
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class Database:
    """Transactions over one engine. A lost connection surfaces as :class:`Unavailable`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction: committed if the block returns, rolled back if it raises."""
        try:
            with self._sessions.begin() as session:
                yield session
        except OperationalError as e:
            raise Unavailable(f"database unavailable: {_first_line(e)}") from e
        except DBAPIError as e:
            if e.connection_invalidated:
                raise Unavailable(f"database connection lost: {_first_line(e)}") from e
            raise

    def ping(self) -> None:
        with self.transaction() as session:
            session.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def _first_line(e: Exception) -> str:
    return str(getattr(e, "orig", e)).strip().splitlines()[0] if str(e) else type(e).__name__

"""Alembic environment for pdscaler. Works on Postgres and SQLite (batch mode)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine, create_engine, text

from pdscaler.store.models import Base

config = context.config
LOCK = 0x70647363616C6572  # "pdscaler": the advisory lock that serialises migrations


def _engine() -> Engine:
    engine = config.attributes.get("engine")
    if isinstance(engine, Engine):
        return engine
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database: pass an engine or set sqlalchemy.url")
    return create_engine(url)


def run_migrations_online() -> None:
    engine = _engine()
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=engine.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            if engine.dialect.name == "postgresql":
                # Two replicas starting together: the second waits here, then finds the
                # schema at head and has nothing to do. Released when the transaction ends.
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK})
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise RuntimeError("pdscaler migrations run online only")
run_migrations_online()

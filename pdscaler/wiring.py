"""The one place that builds clients, stores and the app from Settings."""

from __future__ import annotations

from fastapi import FastAPI

from pdscaler.api.app import create_app
from pdscaler.api.auth import TokenRegistry
from pdscaler.api.context import Services
from pdscaler.api.cursor import CursorCodec
from pdscaler.config import Settings
from pdscaler.control.clock import SystemClock
from pdscaler.domain.clock import Clock
from pdscaler.store import migrate
from pdscaler.store.db import Database, create_db_engine
from pdscaler.store.decisions import DecisionStore
from pdscaler.store.policies import PolicyStore


def build_database(settings: Settings) -> Database:
    if not settings.database.url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Database(
        create_db_engine(
            settings.database_url,
            pool_size=settings.database.pool_size,
            connect_timeout=settings.database.connect_timeout,
            echo=settings.database.echo,
        )
    )


def build_services(settings: Settings, db: Database, clock: Clock | None = None) -> Services:
    def check_schema() -> str:
        db.ping()
        migrate.require_head(db.engine)
        return migrate.head_revision()

    return Services(
        db=db,
        policies=PolicyStore(db),
        decisions=DecisionStore(db),
        tokens=TokenRegistry(settings.api.tokens, anonymous_reads=settings.api.anonymous_reads),
        cursors=CursorCodec(settings.api.cursor_secret.get_secret_value().encode()),
        clock=clock or SystemClock(),
        check_schema=check_schema,
    )


def build_app(settings: Settings, db: Database, clock: Clock | None = None) -> FastAPI:
    """The API over ``db``. Raises SchemaOutOfDate unless the schema is at head."""
    migrate.require_head(db.engine)
    return create_app(
        build_services(settings, db, clock), max_body_bytes=settings.api.max_body_bytes
    )

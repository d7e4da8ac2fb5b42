"""Alembic, driven from code: upgrade, downgrade, and the at-head check run at start-up."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from pdscaler.domain.errors import SchemaOutOfDate, Unavailable
from pdscaler.store.db import first_line

_PACKAGE = Path(__file__).resolve().parents[1]


def migrations_dir() -> Path:
    """``migrations/`` of a source checkout, or its copy inside an installed wheel."""
    for candidate in (_PACKAGE.parent / "migrations", _PACKAGE / "_migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("pdscaler's migrations directory is missing from this install")


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["engine"] = engine
    return config


@contextmanager
def _reachable(engine: Engine) -> Iterator[None]:
    try:
        yield
    except OperationalError as e:
        url = engine.url.render_as_string(hide_password=True)
        raise Unavailable(f"cannot reach the database at {url}: {first_line(e)}") from e


def upgrade(engine: Engine, revision: str = "head") -> None:
    with _reachable(engine):
        command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    with _reachable(engine):
        command.downgrade(alembic_config(engine), revision)


def head_revision() -> str:
    head = ScriptDirectory(str(migrations_dir())).get_current_head()
    if head is None:
        raise FileNotFoundError("no migration revisions found")
    return head


def current_revision(engine: Engine) -> str | None:
    with _reachable(engine), engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def require_head(engine: Engine) -> None:
    """Raise :class:`SchemaOutOfDate` unless the database is at this build's head."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaOutOfDate(current, head)

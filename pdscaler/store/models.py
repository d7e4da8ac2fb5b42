"""ORM rows. The schema itself is created and changed only by Alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out, on Postgres and on SQLite alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass timezone-aware UTC times")
        value = value.astimezone(UTC)
        # SQLite stores text; keep it naive UTC so that text order is time order.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Json = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class PolicyRow(Base):
    """The current state of a policy. Deleting a policy marks it; its history stays."""

    __tablename__ = "policies"
    __table_args__ = (UniqueConstraint("namespace", "name", name="uq_policies_namespace_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(63))
    version: Mapped[int] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(16))
    document: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_by: Mapped[str] = mapped_column(String(128))
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class PolicyVersionRow(Base):
    """One immutable version of a policy: never updated, never deleted."""

    __tablename__ = "policy_versions"
    __table_args__ = (
        UniqueConstraint("policy_id", "version", name="uq_policy_versions_policy_id_version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    policy_id: Mapped[int] = mapped_column(ForeignKey("policies.id"))
    version: Mapped[int] = mapped_column(Integer)
    change: Mapped[str] = mapped_column(String(16))
    document: Mapped[dict[str, Any]] = mapped_column(Json)
    author: Mapped[str] = mapped_column(String(128))
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class DecisionRow(Base):
    """One decision for one pool in one tick, with everything needed to explain it."""

    __tablename__ = "decisions"
    __table_args__ = (
        # Name first: most queries name a policy and not always its namespace.
        Index("ix_decisions_policy_time", "policy_name", "decided_at", "id"),
        Index("ix_decisions_time", "decided_at", "id"),
        Index("ix_decisions_status_time", "status", "decided_at"),
        Index("ix_decisions_tick", "tick_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tick_id: Mapped[str] = mapped_column(String(36))
    decided_at: Mapped[datetime] = mapped_column(UtcDateTime)
    policy_id: Mapped[int] = mapped_column(ForeignKey("policies.id"))
    policy_namespace: Mapped[str] = mapped_column(String(63))
    policy_name: Mapped[str] = mapped_column(String(63))
    policy_version: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    target_api_version: Mapped[str] = mapped_column(String(253))
    target_kind: Mapped[str] = mapped_column(String(63))
    target_name: Mapped[str] = mapped_column(String(253))
    mode: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    current_replicas: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ready_replicas: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pending_replicas: Mapped[int | None] = mapped_column(Integer, nullable=True)
    raw_recommendation: Mapped[int | None] = mapped_column(Integer, nullable=True)
    desired_replicas: Mapped[int | None] = mapped_column(Integer, nullable=True)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    signals: Mapped[dict[str, Any]] = mapped_column(Json)
    forecast: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    resource_version_read: Mapped[str | None] = mapped_column(String(64), nullable=True)
    resource_version_written: Mapped[str | None] = mapped_column(String(64), nullable=True)
    leader_identity: Mapped[str | None] = mapped_column(String(253), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ForecastModelRow(Base):
    """The model a series was last forecast with: its parameters, fit and scores (the
    forecaster's ``describe``), so that a restart can say what it used."""

    __tablename__ = "forecast_models"
    __table_args__ = (
        UniqueConstraint(
            "policy_namespace",
            "policy_name",
            "role",
            "signal",
            name="uq_forecast_models_policy_namespace",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    policy_namespace: Mapped[str] = mapped_column(String(63))
    policy_name: Mapped[str] = mapped_column(String(63))
    role: Mapped[str] = mapped_column(String(16))
    signal: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(32))
    fitted_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)
    description: Mapped[dict[str, Any]] = mapped_column(Json)


class RetentionRunRow(Base):
    """One run of ``pdscaler db retention``: the decisions older than ``cutoff`` deleted."""

    __tablename__ = "retention_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ran_at: Mapped[datetime] = mapped_column(UtcDateTime)
    cutoff: Mapped[datetime] = mapped_column(UtcDateTime)
    deleted: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(128))

"""The forecast model each series was last forecast with: one row per policy, pool and
signal, replaced whenever its model is refitted or chosen anew."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from pdscaler.domain.policy import Role
from pdscaler.domain.signals import PoolKey
from pdscaler.store.db import Database
from pdscaler.store.models import ForecastModelRow

_KEY = ("policy_namespace", "policy_name", "role", "signal")


@dataclass(frozen=True)
class ForecastModelRecord:
    pool: PoolKey
    signal: str
    model: str
    fitted_at: datetime | None
    recorded_at: datetime
    description: dict[str, Any]  # the forecaster's describe(): parameters, fit, scores


class ForecastModelStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def record(self, records: Sequence[ForecastModelRecord]) -> None:
        """Insert or replace the rows of these series, in one transaction."""
        if not records:
            return
        rows = [
            {
                "policy_namespace": r.pool.namespace,
                "policy_name": r.pool.policy,
                "role": r.pool.role.value,
                "signal": r.signal,
                "model": r.model,
                "fitted_at": r.fitted_at,
                "recorded_at": r.recorded_at,
                "description": r.description,
            }
            for r in records
        ]
        dialect = self._db.engine.dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert(ForecastModelRow)
        statement = statement.on_conflict_do_update(
            index_elements=list(_KEY),
            set_={c: statement.excluded[c]
                  for c in ("model", "fitted_at", "recorded_at", "description")},
        )  # fmt: skip
        with self._db.transaction(write=True) as session:
            session.execute(statement, rows)

    def of_policy(self, namespace: str, name: str) -> list[ForecastModelRecord]:
        query = (
            select(ForecastModelRow)
            .where(
                ForecastModelRow.policy_namespace == namespace,
                ForecastModelRow.policy_name == name,
            )
            .order_by(ForecastModelRow.role, ForecastModelRow.signal)
        )
        with self._db.transaction() as session:
            return [_record(row) for row in session.scalars(query)]


def _record(row: ForecastModelRow) -> ForecastModelRecord:
    return ForecastModelRecord(
        PoolKey(row.policy_namespace, row.policy_name, Role(row.role)),
        row.signal,
        row.model,
        row.fitted_at,
        row.recorded_at,
        dict(row.description),
    )

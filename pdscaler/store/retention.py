"""Retention of the decision log: an explicit job that deletes decisions older than an age
and records that it did (``retention_runs``). The service itself never deletes one (on
Postgres its role cannot: see migration 0003)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select

from pdscaler.domain.errors import InvalidInput
from pdscaler.store.db import Database
from pdscaler.store.models import DecisionRow, RetentionRunRow

# Decisions of the last hour rebuild the engine's memory at start-up; a day is the least
# retention accepted, so that no job can cut into them.
MIN_AGE = timedelta(days=1)


@dataclass(frozen=True)
class RetentionRun:
    ran_at: datetime
    cutoff: datetime
    deleted: int
    actor: str


def prune(
    db: Database, older_than: timedelta, *, now: datetime, actor: str, batch: int = 5000
) -> RetentionRun:
    """Delete the decisions decided before ``now - older_than``, ``batch`` rows per
    transaction (the service goes on writing meanwhile), then record the run."""
    if older_than < MIN_AGE:
        raise InvalidInput(f"retention must keep at least {MIN_AGE.days} day of decisions")
    cutoff = now - older_than
    deleted = 0
    while True:
        oldest = (select(DecisionRow.id).where(DecisionRow.decided_at < cutoff)
                  .order_by(DecisionRow.id).limit(batch))  # fmt: skip
        with db.transaction(write=True) as session:
            result = session.execute(delete(DecisionRow).where(DecisionRow.id.in_(oldest)))
            done = int(getattr(result, "rowcount", 0))
        deleted += done
        if done < batch:
            break
    run = RetentionRun(now, cutoff, deleted, actor)
    with db.transaction(write=True) as session:
        row = {"ran_at": now, "cutoff": cutoff, "deleted": deleted, "actor": actor}
        session.execute(insert(RetentionRunRow).values(**row))
    return run

"""The decision log: written before acting, updated once with the outcome, read by the API.

Reads are newest first and paginated by keyset on (decided_at, id), which the indexes
``ix_decisions_policy_time`` and ``ix_decisions_time`` serve directly, so a page costs the
same on the millionth row as on the first.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, Text, bindparam, cast, insert, select, tuple_, update
from sqlalchemy.orm import Session

from pdscaler.domain.decision import (
    Action,
    DecisionRecord,
    DecisionStatus,
    Step,
    TargetRef,
)
from pdscaler.domain.errors import NotFound
from pdscaler.domain.policy import Mode, Role
from pdscaler.domain.signals import PoolKey
from pdscaler.store.db import Database
from pdscaler.store.models import DecisionRow, PolicyRow

Position = tuple[datetime, int]

# The columns of a decision as the read path serves them: JSON columns come back as their
# JSON text, so that a page is passed through without being decoded and encoded again.
_VIEW_COLUMNS = (
    DecisionRow.id,
    DecisionRow.tick_id,
    DecisionRow.decided_at,
    DecisionRow.updated_at,
    DecisionRow.policy_namespace,
    DecisionRow.policy_name,
    DecisionRow.policy_version,
    DecisionRow.role,
    DecisionRow.target_api_version,
    DecisionRow.target_kind,
    DecisionRow.target_name,
    DecisionRow.mode,
    DecisionRow.action,
    DecisionRow.status,
    DecisionRow.current_replicas,
    DecisionRow.ready_replicas,
    DecisionRow.pending_replicas,
    DecisionRow.raw_recommendation,
    DecisionRow.desired_replicas,
    cast(DecisionRow.steps, Text),
    cast(DecisionRow.signals, Text),
    cast(DecisionRow.forecast, Text),
    DecisionRow.error,
    DecisionRow.resource_version_read,
    DecisionRow.resource_version_written,
    DecisionRow.leader_identity,
)


@dataclass(frozen=True)
class DecisionFilter:
    namespace: str | None = None
    policy: str | None = None
    role: Role | None = None
    action: Action | None = None
    status: DecisionStatus | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    tick_id: str | None = None  # one policy's decisions in one tick (its two pools)


@dataclass(frozen=True, slots=True)
class DecisionText:
    """A decision for display: scalar columns as values, JSON columns as JSON text."""

    id: int
    tick_id: str
    decided_at: datetime
    updated_at: datetime
    policy_namespace: str
    policy_name: str
    policy_version: int
    role: str
    target_api_version: str
    target_kind: str
    target_name: str
    mode: str
    action: str
    status: str
    current_replicas: int | None
    ready_replicas: int | None
    pending_replicas: int | None
    raw_recommendation: int | None
    desired_replicas: int | None
    steps_json: str
    signals_json: str
    forecast_json: str | None
    error: str | None
    resource_version_read: str | None
    resource_version_written: str | None
    leader_identity: str | None

    @property
    def position(self) -> Position:
        return (self.decided_at, self.id)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How acting on one decision (named by its tick and role) turned out."""

    tick_id: str
    role: Role
    status: DecisionStatus
    error: str | None = None
    resource_version_written: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryRow:
    decided_at: datetime
    policy_namespace: str
    policy_name: str
    role: str
    status: str
    current_replicas: int | None
    desired_replicas: int | None
    raw_recommendation: int | None
    ready_replicas: int | None = None
    pending_replicas: int | None = None
    tick_id: str | None = None


@dataclass(frozen=True)
class StoredDecision:
    id: int
    record: DecisionRecord
    updated_at: datetime
    resource_version_written: str | None

    @property
    def position(self) -> Position:
        return (self.record.decided_at, self.id)


class DecisionStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def record(self, decision: DecisionRecord) -> int:
        """Write the decision (normally ``pending``) and return its id."""
        with self._db.transaction(write=True) as session:
            policy_id = session.scalar(
                select(PolicyRow.id).where(
                    PolicyRow.namespace == decision.policy_namespace,
                    PolicyRow.name == decision.policy_name,
                )
            )
            if policy_id is None:
                raise NotFound(
                    f"policy {decision.policy_namespace}/{decision.policy_name} not found"
                )
            row = to_row(decision, policy_id)
            session.add(row)
            session.flush()
            return row.id

    def record_many(self, decisions: Sequence[DecisionRecord]) -> None:
        """Write many decisions in one transaction: all or none.

        A decision is found again by its tick id and role (see :meth:`finish_many`), so no
        ids come back: the rows go in as one pipelined batch.
        """
        if not decisions:
            return
        keys = {(d.policy_namespace, d.policy_name) for d in decisions}
        with self._db.transaction(write=True) as session:
            ids = _policy_ids(session, keys)
            missing = keys - ids.keys()
            if missing:
                raise NotFound(f"policies not found: {sorted(missing)}")
            rows = [_values(d, ids[(d.policy_namespace, d.policy_name)]) for d in decisions]
            session.connection().execute(insert(DecisionRow), rows)

    def finish_many(self, outcomes: Sequence[Outcome], *, now: datetime) -> None:
        """Record the outcomes of acting on many decisions, in one transaction."""
        if not outcomes:
            return
        statement = (
            update(DecisionRow)
            .where(DecisionRow.tick_id == bindparam("t"), DecisionRow.role == bindparam("r"))
            .values(
                status=bindparam("s"),
                error=bindparam("e"),
                resource_version_written=bindparam("v"),
                updated_at=bindparam("u"),
            )
        )
        rows = [
            {"t": o.tick_id, "r": o.role.value, "s": o.status.value, "e": o.error,
             "v": o.resource_version_written, "u": now}
            for o in outcomes
        ]  # fmt: skip
        with self._db.transaction(write=True) as session:
            session.connection().execute(statement, rows)

    def recent(self, since: datetime) -> list[HistoryRow]:
        """What rebuilding the engine's history needs, oldest first: a few columns per row."""
        columns = (
            DecisionRow.decided_at,
            DecisionRow.policy_namespace,
            DecisionRow.policy_name,
            DecisionRow.role,
            DecisionRow.status,
            DecisionRow.current_replicas,
            DecisionRow.desired_replicas,
            DecisionRow.raw_recommendation,
            DecisionRow.ready_replicas,
            DecisionRow.pending_replicas,
            DecisionRow.tick_id,
        )
        query = (
            select(*columns)
            .where(DecisionRow.decided_at >= since)
            .order_by(DecisionRow.decided_at, DecisionRow.id)
        )
        with self._db.transaction() as session:
            rows: list[tuple[Any, ...]] = [tuple(row) for row in session.execute(query)]
        return [HistoryRow(*row) for row in rows]

    def ids(self, decisions: Sequence[tuple[str, Role]]) -> dict[tuple[str, Role], int]:
        """The ids of decisions named by tick id and role (as :meth:`finish_many` names
        them); the ones not found are left out."""
        if not decisions:
            return {}
        ticks = {tick_id for tick_id, _role in decisions}
        query = select(DecisionRow.id, DecisionRow.tick_id, DecisionRow.role).where(
            DecisionRow.tick_id.in_(ticks)
        )
        with self._db.transaction() as session:
            found = {(tick_id, Role(role)): id_ for id_, tick_id, role in session.execute(query)}
        return {key: found[key] for key in decisions if key in found}

    def warming(self, since: datetime) -> list[tuple[PoolKey, datetime]]:
        """The ticks since ``since`` at which a pool had replicas on their way and none
        ready: when it served nothing (see ``control.training``)."""
        query = (
            select(
                DecisionRow.policy_namespace,
                DecisionRow.policy_name,
                DecisionRow.role,
                DecisionRow.decided_at,
            )
            .where(
                DecisionRow.decided_at >= since,
                DecisionRow.pending_replicas > 0,
                DecisionRow.ready_replicas == 0,
            )
            .order_by(DecisionRow.decided_at)
        )
        with self._db.transaction() as session:
            rows = list(session.execute(query))
        return [(PoolKey(ns, name, Role(role)), at) for ns, name, role, at in rows]

    def finish(
        self,
        decision_id: int,
        status: DecisionStatus,
        *,
        now: datetime,
        error: str | None = None,
        resource_version_written: str | None = None,
    ) -> None:
        """Record the outcome of acting on a decision."""
        with self._db.transaction(write=True) as session:
            result = session.execute(
                update(DecisionRow)
                .where(DecisionRow.id == decision_id)
                .values(
                    status=status.value,
                    error=error,
                    resource_version_written=resource_version_written,
                    updated_at=now,
                )
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise NotFound(f"decision {decision_id} not found")

    def get(self, decision_id: int) -> StoredDecision:
        with self._db.transaction() as session:
            row = session.get(DecisionRow, decision_id)
            if row is None:
                raise NotFound(f"decision {decision_id} not found")
            return from_row(row)

    def page(
        self, where: DecisionFilter, *, limit: int, after: Position | None = None
    ) -> tuple[list[StoredDecision], Position | None]:
        """Up to ``limit`` decisions, newest first, strictly after ``after``.

        Returns the page and the position to continue from, or None on the last page.
        """
        query = _paged(select(DecisionRow), where, limit, after)
        with self._db.transaction() as session:
            rows = list(session.scalars(query))
        page = [from_row(row) for row in rows[:limit]]
        return page, (page[-1].position if len(rows) > limit else None)

    def page_text(
        self, where: DecisionFilter, *, limit: int, after: Position | None = None
    ) -> tuple[list[DecisionText], Position | None]:
        """As :meth:`page`, for display: no ORM objects, JSON columns left as text."""
        query = _paged(select(*_VIEW_COLUMNS), where, limit, after)
        with self._db.transaction() as session:
            rows = [DecisionText(*tuple(row)) for row in session.execute(query)]
        page = rows[:limit]
        return page, (page[-1].position if len(rows) > limit else None)

    def get_text(self, decision_id: int) -> DecisionText:
        with self._db.transaction() as session:
            row = session.execute(
                select(*_VIEW_COLUMNS).where(DecisionRow.id == decision_id)
            ).one_or_none()
        if row is None:
            raise NotFound(f"decision {decision_id} not found")
        return DecisionText(*tuple(row))

    def scan_text(self, where: DecisionFilter, *, batch: int = 1000) -> Iterator[DecisionText]:
        """Every matching decision, newest first, one short transaction per batch."""
        after: Position | None = None
        while True:
            page, after = self.page_text(where, limit=batch, after=after)
            yield from page
            if after is None:
                return


Q = TypeVar("Q", bound="Select[*tuple[Any, ...]]")


def _paged(query: Q, where: DecisionFilter, limit: int, after: Position | None) -> Q:
    """Filtered, newest first, after ``after``, one row more than a page to tell if more follow."""
    query = _filtered(query, where)
    if after is not None:
        query = query.where(tuple_(DecisionRow.decided_at, DecisionRow.id) < after)
    order = (DecisionRow.decided_at.desc(), DecisionRow.id.desc())
    return query.order_by(*order).limit(limit + 1)


def _filtered(query: Q, where: DecisionFilter) -> Q:
    if where.namespace is not None:
        query = query.where(DecisionRow.policy_namespace == where.namespace)
    if where.policy is not None:
        query = query.where(DecisionRow.policy_name == where.policy)
    if where.role is not None:
        query = query.where(DecisionRow.role == where.role.value)
    if where.action is not None:
        query = query.where(DecisionRow.action == where.action.value)
    if where.status is not None:
        query = query.where(DecisionRow.status == where.status.value)
    if where.since is not None:
        query = query.where(DecisionRow.decided_at >= where.since)
    if where.until is not None:
        query = query.where(DecisionRow.decided_at < where.until)
    if where.tick_id is not None:
        query = query.where(DecisionRow.tick_id == where.tick_id)
    return query


def _policy_ids(session: Session, keys: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    namespaces = {namespace for namespace, _ in keys}
    query = select(PolicyRow.namespace, PolicyRow.name, PolicyRow.id).where(
        PolicyRow.namespace.in_(namespaces)
    )
    return {(ns, name): pid for ns, name, pid in session.execute(query) if (ns, name) in keys}


def _values(decision: DecisionRecord, policy_id: int) -> dict[str, Any]:
    return {
        "tick_id": decision.tick_id,
        "decided_at": decision.decided_at,
        "policy_id": policy_id,
        "policy_namespace": decision.policy_namespace,
        "policy_name": decision.policy_name,
        "policy_version": decision.policy_version,
        "role": decision.role.value,
        "target_api_version": decision.target.api_version,
        "target_kind": decision.target.kind,
        "target_name": decision.target.name,
        "mode": decision.mode.value,
        "action": decision.action.value,
        "status": decision.status.value,
        "current_replicas": decision.current_replicas,
        "ready_replicas": decision.ready_replicas,
        "pending_replicas": decision.pending_replicas,
        "raw_recommendation": decision.raw_recommendation,
        "desired_replicas": decision.desired_replicas,
        "steps": [
            {"name": s.name, "value": s.value, "reason": str(s.reason), "message": s.message}
            for s in decision.steps
        ],
        "signals": dict(decision.signals),
        "forecast": dict(decision.forecast) if decision.forecast is not None else None,
        "error": decision.error,
        "resource_version_read": decision.resource_version,
        "resource_version_written": None,
        "leader_identity": decision.leader_identity,
        "updated_at": decision.decided_at,
    }


def to_row(decision: DecisionRecord, policy_id: int) -> DecisionRow:
    return DecisionRow(**_values(decision, policy_id))


def from_row(row: DecisionRow) -> StoredDecision:
    record = DecisionRecord(
        tick_id=row.tick_id,
        decided_at=row.decided_at,
        policy_namespace=row.policy_namespace,
        policy_name=row.policy_name,
        policy_version=row.policy_version,
        role=Role(row.role),
        target=TargetRef(row.target_api_version, row.target_kind, row.target_name),
        mode=Mode(row.mode),
        desired_replicas=row.desired_replicas,
        current_replicas=row.current_replicas,
        ready_replicas=row.ready_replicas,
        pending_replicas=row.pending_replicas,
        raw_recommendation=row.raw_recommendation,
        steps=tuple(Step(**_step(s)) for s in row.steps),
        signals=row.signals,
        forecast=row.forecast,
        status=DecisionStatus(row.status),
        error=row.error,
        resource_version=row.resource_version_read,
        leader_identity=row.leader_identity,
    )
    return StoredDecision(row.id, record, row.updated_at, row.resource_version_written)


def _step(raw: dict[str, Any]) -> dict[str, Any]:
    return {key: raw[key] for key in ("name", "value", "reason", "message") if key in raw}

"""Policies and their immutable version history.

Every change writes the policy row and a new version row in one transaction. The row is
updated only if its version is still the one the change was based on, so two concurrent
writers cannot both win: the loser gets :class:`Conflict`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pdscaler.domain.errors import AlreadyExists, Conflict, NotFound
from pdscaler.domain.policy import Policy
from pdscaler.domain.versioning import ChangeKind, PolicyVersion, StoredPolicy
from pdscaler.store.db import Database
from pdscaler.store.models import PolicyRow, PolicyVersionRow

Update = Callable[[StoredPolicy], Policy]


class ApplyOutcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


class PolicyStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._cache: dict[tuple[int, int], Policy] = {}

    def all(self, namespace: str | None = None) -> list[StoredPolicy]:
        """Live policies in name order. Each version's document is parsed only once."""
        query = select(PolicyRow).where(PolicyRow.deleted_at.is_(None))
        if namespace is not None:
            query = query.where(PolicyRow.namespace == namespace)
        with self._db.transaction() as session:
            rows = session.scalars(query.order_by(PolicyRow.namespace, PolicyRow.name))
            return [_stored(row, self._parsed(row)) for row in rows]

    def _parsed(self, row: PolicyRow) -> Policy:
        key = (row.id, row.version)
        policy = self._cache.get(key)
        if policy is None:
            if len(self._cache) > 100_000:  # versions pile up; start over rather than grow
                self._cache.clear()
            policy = self._cache[key] = Policy.model_validate(row.document)
        return policy

    def get(self, namespace: str, name: str) -> StoredPolicy:
        with self._db.transaction() as session:
            row = _live_row(session, namespace, name)
            return _stored(row, self._parsed(row))

    def create(self, policy: Policy, *, author: str, comment: str, now: datetime) -> StoredPolicy:
        """Create a policy. A deleted policy of the same name comes back with its history."""
        namespace, name = policy.key
        with self._db.transaction(write=True) as session:
            row = _row(session, namespace, name, lock=True)
            if row is not None and row.deleted_at is None:
                raise AlreadyExists(f"policy {namespace}/{name} already exists")
            if row is None:
                row = PolicyRow(namespace=namespace, name=name, version=0)
                session.add(row)
            row.created_at = now
            return _write_version(session, row, policy, ChangeKind.CREATE, author, comment, now)

    def change(
        self,
        namespace: str,
        name: str,
        kind: ChangeKind,
        update_policy: Update,
        *,
        expected_version: int | None,
        author: str,
        comment: str,
        now: datetime,
    ) -> StoredPolicy:
        """Write the policy that ``update_policy`` derives from the current one.

        ``expected_version`` (from If-Match or metadata.resourceVersion) must match the
        current version when given. ``update_policy`` may raise; then nothing is written.
        A change that leaves the document as it is writes nothing either, as in Kubernetes.
        """
        with self._db.transaction(write=True) as session:
            row = _live_row(session, namespace, name, lock=True)
            _check_version(row, expected_version)
            policy = update_policy(_stored(row))
            if policy.key != (namespace, name):
                raise Conflict("metadata.name and metadata.namespace cannot be changed")
            if policy.document() == row.document:
                return _stored(row)
            return _write_version(session, row, policy, kind, author, comment, now)

    def apply(
        self, policy: Policy, *, author: str, comment: str, now: datetime
    ) -> tuple[StoredPolicy, ApplyOutcome]:
        """Create or update to match ``policy``; an identical document writes nothing."""
        namespace, name = policy.key
        with self._db.transaction(write=True) as session:
            row = _row(session, namespace, name, lock=True)
            if row is not None and row.deleted_at is None:
                if row.document == policy.document():
                    return _stored(row), ApplyOutcome.UNCHANGED
                stored = _write_version(
                    session, row, policy, ChangeKind.UPDATE, author, comment, now
                )
                return stored, ApplyOutcome.UPDATED
        return self.create(policy, author=author, comment=comment, now=now), ApplyOutcome.CREATED

    def delete(
        self,
        namespace: str,
        name: str,
        *,
        expected_version: int | None,
        author: str,
        comment: str,
        now: datetime,
    ) -> None:
        """Mark the policy deleted and record the deletion as its last version."""
        with self._db.transaction(write=True) as session:
            row = _live_row(session, namespace, name, lock=True)
            _check_version(row, expected_version)
            policy = Policy.model_validate(row.document)
            _write_version(session, row, policy, ChangeKind.DELETE, author, comment, now)
            row.deleted_at = now

    def versions(self, namespace: str, name: str) -> list[PolicyVersion]:
        """The whole history, oldest first; kept after the policy is deleted."""
        with self._db.transaction() as session:
            row = _row(session, namespace, name)
            if row is None:
                raise NotFound(f"policy {namespace}/{name} not found")
            query = (
                select(PolicyVersionRow)
                .where(PolicyVersionRow.policy_id == row.id)
                .order_by(PolicyVersionRow.version)
            )
            return [_version(row, v) for v in session.scalars(query)]

    def version(self, namespace: str, name: str, version: int) -> PolicyVersion:
        with self._db.transaction() as session:
            row = _row(session, namespace, name)
            found = row and session.scalar(
                select(PolicyVersionRow).where(
                    PolicyVersionRow.policy_id == row.id, PolicyVersionRow.version == version
                )
            )
            if row is None or not found:
                raise NotFound(f"policy {namespace}/{name} has no version {version}")
            return _version(row, found)


def _row(session: Session, namespace: str, name: str, *, lock: bool = False) -> PolicyRow | None:
    query = select(PolicyRow).where(PolicyRow.namespace == namespace, PolicyRow.name == name)
    return session.scalar(query.with_for_update() if lock else query)


def _live_row(session: Session, namespace: str, name: str, *, lock: bool = False) -> PolicyRow:
    row = _row(session, namespace, name, lock=lock)
    if row is None or row.deleted_at is not None:
        raise NotFound(f"policy {namespace}/{name} not found")
    return row


def _check_version(row: PolicyRow, expected_version: int | None) -> None:
    if expected_version is not None and expected_version != row.version:
        raise Conflict(
            f"policy {row.namespace}/{row.name} is at version {row.version}, "
            f"the change was based on version {expected_version}: re-read it and retry"
        )


def _write_version(
    session: Session,
    row: PolicyRow,
    policy: Policy,
    kind: ChangeKind,
    author: str,
    comment: str,
    now: datetime,
) -> StoredPolicy:
    document = policy.document()
    base_version = row.version
    values = {
        "version": base_version + 1,
        "mode": policy.spec.mode.value,
        "document": document,
        "updated_at": now,
        "updated_by": author,
        "deleted_at": None,
    }
    if row.id is None:
        for key, value in values.items():
            setattr(row, key, value)
        try:
            session.flush()
        except IntegrityError as e:
            raise Conflict(f"policy {row.namespace}/{row.name} was created concurrently") from e
    else:
        # Conditional on the version read: a concurrent writer makes this match no row.
        result = session.execute(
            update(PolicyRow)
            .where(PolicyRow.id == row.id, PolicyRow.version == base_version)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict(f"policy {row.namespace}/{row.name} changed concurrently: retry")
        session.refresh(row)
    session.add(
        PolicyVersionRow(
            policy_id=row.id,
            version=row.version,
            change=kind.value,
            document=document,
            author=author,
            comment=comment,
            created_at=now,
        )
    )
    try:
        session.flush()
    except IntegrityError as e:
        raise Conflict(f"policy {row.namespace}/{row.name} changed concurrently: retry") from e
    return _stored(row)


def _stored(row: PolicyRow, policy: Policy | None = None) -> StoredPolicy:
    return StoredPolicy(
        policy=policy or Policy.model_validate(row.document),
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


def _version(policy: PolicyRow, row: PolicyVersionRow) -> PolicyVersion:
    return PolicyVersion(
        namespace=policy.namespace,
        name=policy.name,
        version=row.version,
        change=ChangeKind(row.change),
        document=row.document,
        author=row.author,
        comment=row.comment,
        created_at=row.created_at,
    )

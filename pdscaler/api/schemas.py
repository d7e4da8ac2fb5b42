"""API schemas: what goes over the wire, apart from ORM rows and domain types."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from pdscaler.domain.decision import Action, DecisionStatus
from pdscaler.domain.policy import Mode, Role
from pdscaler.domain.versioning import ChangeKind, FieldChange, PolicyVersion, StoredPolicy

# Text that reaches the database must not hold a NUL character: Postgres refuses it in a
# query or a row (a 500), so it is a 422 here.
NO_NUL = r"^[^\x00]*$"


class Schema(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class FieldProblem(Schema):
    field: str
    message: str


class ErrorOut(Schema):
    code: str
    message: str
    errors: list[FieldProblem] = []


class MetadataOut(Schema):
    name: str
    namespace: str
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    resource_version: str
    creation_timestamp: datetime


class PolicyStatusOut(Schema):
    version: int
    mode: Mode
    updated_at: datetime
    updated_by: str
    # What the control loop cannot read for this policy (metric families not found).
    warnings: list[str] = []


class PolicyOut(Schema):
    api_version: str
    kind: str
    metadata: MetadataOut
    spec: dict[str, Any]
    status: PolicyStatusOut

    @classmethod
    def of(cls, stored: StoredPolicy, warnings: list[str] | None = None) -> PolicyOut:
        document = stored.policy.document()
        meta = document["metadata"]
        return cls(
            api_version=document["apiVersion"],
            kind=document["kind"],
            metadata=MetadataOut(
                name=meta["name"],
                namespace=meta["namespace"],
                labels=meta.get("labels", {}),
                annotations=meta.get("annotations", {}),
                resource_version=str(stored.version),
                creation_timestamp=stored.created_at,
            ),
            spec=document["spec"],
            status=PolicyStatusOut(
                version=stored.version,
                mode=stored.policy.spec.mode,
                updated_at=stored.updated_at,
                updated_by=stored.updated_by,
                warnings=warnings or [],
            ),
        )


class PolicyList(Schema):
    items: list[PolicyOut]


class VersionOut(Schema):
    version: int
    change: ChangeKind
    author: str
    comment: str
    created_at: datetime
    document: dict[str, Any]

    @classmethod
    def of(cls, version: PolicyVersion) -> VersionOut:
        return cls(
            version=version.version,
            change=version.change,
            author=version.author,
            comment=version.comment,
            created_at=version.created_at,
            document=version.document,
        )


class VersionList(Schema):
    items: list[VersionOut]


class FieldChangeOut(Schema):
    path: str
    op: Literal["add", "remove", "replace"]
    old: Any = None
    new: Any = None

    @classmethod
    def of(cls, change: FieldChange) -> FieldChangeOut:
        return cls(path=change.path, op=change.op, old=change.old, new=change.new)


class DiffOut(Schema):
    from_version: int
    to_version: int
    changes: list[FieldChangeOut]
    unified: str


class ValidationOut(Schema):
    valid: bool
    errors: list[FieldProblem] = []


class ChangeIn(Schema):
    comment: str = Field(default="", max_length=1000, pattern=NO_NUL)


class RollbackIn(ChangeIn):
    version: int = Field(
        ge=1, le=2**31 - 1, description="The version whose document becomes current."
    )


class StepOut(Schema):
    name: str
    value: int
    reason: str
    message: str


class TargetOut(Schema):
    api_version: str
    kind: str
    name: str


class DecisionOut(Schema):
    id: int
    tick_id: str
    decided_at: datetime
    updated_at: datetime
    policy_namespace: str
    policy_name: str
    policy_version: int
    role: Role
    target: TargetOut
    mode: Mode
    action: Action
    status: DecisionStatus
    current_replicas: int | None
    ready_replicas: int | None
    pending_replicas: int | None
    raw_recommendation: int | None
    desired_replicas: int | None
    steps: list[StepOut]
    signals: dict[str, Any]
    forecast: dict[str, Any] | None
    error: str | None
    resource_version_read: str | None
    resource_version_written: str | None
    leader_identity: str | None
    grafana_url: str | None = Field(
        default=None,
        description="The Grafana dashboard at a window around this decision, with its "
        "namespace, policy and role selected; null unless Grafana is configured.",
    )


class DecisionPage(Schema):
    items: list[DecisionOut]
    next_cursor: str | None


class PoolExplainOut(Schema):
    role: Role
    decision_id: int
    decided_at: datetime
    status: DecisionStatus
    current_replicas: int | None
    desired_replicas: int | None
    steps: list[StepOut]
    text: str
    grafana_url: str | None = Field(
        default=None, description="The decision in the Grafana dashboard (see DecisionOut)."
    )


class ExplainOut(Schema):
    namespace: str
    name: str
    version: int
    pools: list[PoolExplainOut]


class Health(Schema):
    status: Literal["ok"]


class Readiness(Schema):
    status: Literal["ready"]
    schema_revision: str
    warnings: list[str] = []  # e.g. metric families no alias was found for

"""The decision record: one per pool per tick, written before any action is taken."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

from pdscaler.domain.policy import Mode, Role


class DecisionStatus(StrEnum):
    PENDING = "pending"  # written, not yet acted upon
    APPLIED = "applied"  # the scale write succeeded
    FAILED = "failed"  # the scale write failed; ``error`` says why
    SKIPPED = "skipped"  # nothing to write: no change, shadow or paused mode, not leader
    CONFLICT = "conflict"  # the target changed under us; re-read and re-decide next tick
    ABANDONED = "abandoned"  # found pending after a crash, the target not at its size


class Action(StrEnum):
    SCALE_UP = "scale_up"
    SCALE_DOWN = "scale_down"
    NONE = "none"

    @classmethod
    def between(cls, current_replicas: int | None, desired_replicas: int | None) -> Action:
        if current_replicas is None or desired_replicas is None:
            return cls.NONE
        if desired_replicas == current_replicas:
            return cls.NONE
        return cls.SCALE_UP if desired_replicas > current_replicas else cls.SCALE_DOWN


class Step(NamedTuple):
    """One step of the decision chain: its output value, reason code and message.

    A tuple, not a dataclass: a tick makes tens of thousands of them.
    """

    name: str
    value: int
    reason: str
    message: str = ""


@dataclass(frozen=True)
class TargetRef:
    api_version: str
    kind: str
    name: str


@dataclass(frozen=True)
class DecisionRecord:
    tick_id: str
    decided_at: datetime
    policy_namespace: str
    policy_name: str
    policy_version: int
    role: Role
    target: TargetRef
    mode: Mode
    desired_replicas: int | None  # None when no decision could be made (target unreadable)
    current_replicas: int | None = None
    ready_replicas: int | None = None
    pending_replicas: int | None = None
    raw_recommendation: int | None = None
    steps: tuple[Step, ...] = ()
    signals: Mapping[str, Any] = field(default_factory=dict)
    forecast: Mapping[str, Any] | None = None
    status: DecisionStatus = DecisionStatus.PENDING
    error: str | None = None
    resource_version: str | None = None
    leader_identity: str | None = None

    @property
    def action(self) -> Action:
        return Action.between(self.current_replicas, self.desired_replicas)


@dataclass(frozen=True)
class TickSummary:
    """What one tick decided and did, for its observers (metrics, annotations)."""

    at: datetime
    duration_s: float
    records: tuple[DecisionRecord, ...]  # as audited, before acting
    applied: tuple[DecisionRecord, ...] = ()  # those whose /scale write succeeded
    actuations: Mapping[str, int] = field(default_factory=dict)  # writes by HTTP status
    source_failed: bool = False  # the metrics source raised: every signal was an error
    # each policy's SLO in ms, (TTFT, ITL), by (namespace, name)
    slos: Mapping[tuple[str, str], tuple[float | None, float | None]] = field(default_factory=dict)

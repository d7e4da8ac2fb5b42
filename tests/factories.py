"""Builders for test inputs."""

from __future__ import annotations

import copy
import uuid
from datetime import datetime
from typing import Any

from pdscaler.domain.decision import DecisionRecord, DecisionStatus, Step, TargetRef
from pdscaler.domain.policy import Mode, Role
from pdscaler.domain.versioning import merge_patch

BASE_POLICY: dict[str, Any] = {
    "apiVersion": "pdscaler.io/v1alpha1",
    "kind": "PDScalingPolicy",
    "metadata": {"name": "llama", "namespace": "inference"},
    "spec": {
        "mode": "active",
        "engine": "vllm",
        "slo": {"ttftMs": 800, "itlMs": 30},
        "coldStartSeconds": 90,
        "prefill": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "prefill"},
            "minReplicas": 1,
            "maxReplicas": 8,
            "metrics": [{"type": "QueuedPrefillTokens", "targetPerReplica": 16384}],
        },
        "decode": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "decode"},
            "minReplicas": 1,
            "maxReplicas": 16,
            "metrics": [{"type": "KVCacheUtilization", "target": 0.75}],
        },
    },
}


def policy_doc(patch: dict[str, Any] | None = None, **metadata: str) -> dict[str, Any]:
    """A valid policy document, changed by a JSON merge patch and metadata overrides."""
    doc = copy.deepcopy(BASE_POLICY)
    doc["metadata"].update(metadata)
    return merge_patch(doc, patch) if patch else doc


def decision(
    at: datetime,
    *,
    namespace: str = "inference",
    policy: str = "llama",
    role: Role = Role.PREFILL,
    current: int = 2,
    desired: int = 3,
    status: DecisionStatus = DecisionStatus.PENDING,
) -> DecisionRecord:
    return DecisionRecord(
        tick_id=str(uuid.uuid4()),
        decided_at=at,
        policy_namespace=namespace,
        policy_name=policy,
        policy_version=1,
        role=role,
        target=TargetRef("apps/v1", "Deployment", f"{policy}-{role.value}"),
        mode=Mode.ACTIVE,
        current_replicas=current,
        ready_replicas=current,
        pending_replicas=0,
        raw_recommendation=desired + 1,
        steps=(
            Step("recommend", desired + 1, "QueueTarget", "queued tokens over target"),
            Step("limit", desired, "ScaleUpLimit", "at most 1 pod per 15s"),
        ),
        desired_replicas=desired,
        signals={"queuedPrefillTokens": {"value": 40000.0, "quality": "fresh"}},
        status=status,
        resource_version="100",
    )

"""Drain-aware scale-down: before a Deployment shrinks, its pods carry their load as the
pod-deletion-cost, so the ReplicaSet removes the least-loaded ones first."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from pdscaler.actuator.kubernetes import DELETION_COST, KubernetesActuator
from pdscaler.control.clock import FakeClock
from pdscaler.domain.policy import ScaleTargetRef
from tests.kube.emulator import ApiServerEmulator

NS = "inference"
DECODE = ScaleTargetRef(api_version="apps/v1", kind="Deployment", name="llama-decode")
LABELS = {"app": "llama-decode"}


@pytest.fixture
def emulator() -> Iterator[ApiServerEmulator]:
    with ApiServerEmulator() as server:
        server.add_workload("apps/v1", "Deployment", NS, "llama-decode", 4, LABELS)
        for name in ("busy", "idle", "unscraped"):
            server.add_pod(NS, name, LABELS, ready=True)
        server.add_pod(NS, "starting", LABELS, ready=False)
        yield server


@pytest.fixture
def actuator(emulator: ApiServerEmulator) -> KubernetesActuator:
    return KubernetesActuator(emulator.transport(), FakeClock(datetime.now(UTC)))


def _cost(emulator: ApiServerEmulator, pod: str) -> str | None:
    annotations = emulator.pod(NS, pod)["metadata"].get("annotations") or {}
    cost: str | None = annotations.get(DELETION_COST)
    return cost


def test_ready_pods_cost_their_load_and_unknown_ones_cost_the_most(
    emulator: ApiServerEmulator, actuator: KubernetesActuator
) -> None:
    marked = actuator.prefer_removal(NS, DECODE, "app=llama-decode", {"busy": 41.6, "idle": 0})

    assert marked == 3
    assert [_cost(emulator, p) for p in ("busy", "idle", "unscraped")] == ["42", "0", "43"]
    assert _cost(emulator, "starting") is None  # removed first anyway: not ready
    patches = {r[2] for r in emulator.requests if r[0] == "PATCH"}
    assert patches == {"application/merge-patch+json"}


def test_pods_whose_cost_is_already_right_are_not_patched_again(
    emulator: ApiServerEmulator, actuator: KubernetesActuator
) -> None:
    load = {"busy": 40.0, "idle": 1.0, "unscraped": 3.0}
    actuator.prefer_removal(NS, DECODE, "app=llama-decode", load)

    again = actuator.prefer_removal(NS, DECODE, "app=llama-decode", {**load, "idle": 5.0})

    assert again == 1
    assert _cost(emulator, "idle") == "5"


def test_kinds_that_ignore_the_annotation_are_left_alone(
    emulator: ApiServerEmulator, actuator: KubernetesActuator
) -> None:
    lws = ScaleTargetRef(api_version="leaderworkerset.x-k8s.io/v1", kind="LeaderWorkerSet",
                         name="llama-decode")  # fmt: skip

    assert actuator.prefer_removal(NS, lws, "app=llama-decode", {"idle": 0.0}) == 0
    assert [r for r in emulator.requests if "/pods" in r[1]] == []

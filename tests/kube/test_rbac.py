"""pdscaler's requests succeed with exactly the RBAC that deploy/ grants: every target kind
read and resized, pods counted and marked, other autoscalers listed, the leader Lease."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from pdscaler.actuator.kubernetes import KubernetesActuator
from pdscaler.actuator.leader import LeaseConfig, LeaseElector
from pdscaler.control.clock import FakeClock
from pdscaler.domain.errors import Forbidden
from pdscaler.domain.policy import ScaleTargetRef
from tests.kube.emulator import ApiServerEmulator

RBAC = Path(__file__).parents[2] / "deploy" / "base" / "rbac.yaml"
NS = "inference"
TARGETS = [
    ("apps/v1", "Deployment", "llama-decode"),
    ("apps/v1", "StatefulSet", "llama-prefill"),
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "dsv3-prefill"),
    ("workloads.x-k8s.io/v1alpha1", "RoleBasedGroupScalingAdapter", "sglang-decode"),
    ("nvidia.com/v1alpha1", "DynamoGraphDeploymentScalingAdapter", "dynamo-prefill"),
]
STORM = "orchestration.aibrix.ai/v1alpha1"


def _rules(kind: str) -> list[dict[str, Any]]:
    documents = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    return [rule for d in documents if d["kind"] == kind for rule in d["rules"]]


@pytest.fixture
def emulator() -> Iterator[ApiServerEmulator]:
    with ApiServerEmulator() as server:
        for api_version, kind, name in TARGETS:
            server.add_workload(api_version, kind, NS, name, 2, {"app": name})
            server.add_pod(NS, f"{name}-0", {"app": name}, ready=True)
        roles = [{"name": "prefill", "replicas": 1}, {"name": "decode", "replicas": 2}]
        server.add_object(STORM, "StormService", NS, "storm",
                          {"replicas": 1, "template": {"spec": {"roles": roles}}})  # fmt: skip
        server.add_object("autoscaling/v2", "HorizontalPodAutoscaler", NS, "other",
                          {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                              "name": "llama-decode"}})  # fmt: skip
        server.grant(_rules("ClusterRole"))
        server.grant(_rules("Role"), namespace="pdscaler")
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC))


@pytest.fixture
def actuator(emulator: ApiServerEmulator, clock: FakeClock) -> KubernetesActuator:
    return KubernetesActuator(emulator.transport(retries=0), clock)


@pytest.mark.parametrize(("api_version", "kind", "name"), TARGETS, ids=[t[1] for t in TARGETS])
def test_every_target_kind_is_read_and_resized(
    emulator: ApiServerEmulator, actuator: KubernetesActuator, api_version: str, kind: str,
    name: str,
) -> None:  # fmt: skip
    target = ScaleTargetRef(api_version=api_version, kind=kind, name=name)

    state = actuator.read_scale(NS, target)
    actuator.write_scale(NS, target, 3, state.resource_version)

    assert state.ready_replicas == 1
    assert emulator.replicas(NS, kind, name) == 3


def test_a_stormservice_role_is_read_and_resized(
    emulator: ApiServerEmulator, actuator: KubernetesActuator
) -> None:
    target = ScaleTargetRef(api_version=STORM, kind="StormService", name="storm", role="decode")

    state = actuator.read_scale(NS, target)
    actuator.write_scale(NS, target, 4, state.resource_version)

    roles = emulator.object(NS, "StormService", "storm")["spec"]["template"]["spec"]["roles"]
    assert roles[1]["replicas"] == 4


def test_other_autoscalers_are_listed_and_pods_marked(
    emulator: ApiServerEmulator, actuator: KubernetesActuator
) -> None:
    target = ScaleTargetRef(api_version="apps/v1", kind="Deployment", name="llama-decode")

    state = actuator.read_scale(NS, target)
    marked = actuator.prefer_removal(NS, target, "app=llama-decode", {"llama-decode-0": 3.0})

    assert state.managed_by == "HPA inference/other"
    assert marked == 1


def test_the_leader_lease_is_created_renewed_confirmed_and_released(
    emulator: ApiServerEmulator, clock: FakeClock
) -> None:
    lease = LeaseConfig("pdscaler", "pdscaler-leader", "pdscaler-0")
    elector = LeaseElector(emulator.transport(retries=0), lease, clock)

    assert elector.step()  # creates the Lease
    clock.advance(2)
    assert elector.step()  # renews it
    assert elector.confirm()
    elector.release()

    stored = emulator.transport().request(
        "GET", "/apis/coordination.k8s.io/v1/namespaces/pdscaler/leases/pdscaler-leader"
    )
    assert not stored["spec"].get("holderIdentity")


def test_without_the_no_drain_rule_pods_cannot_be_marked(clock: FakeClock) -> None:
    with ApiServerEmulator() as server:
        server.add_workload("apps/v1", "Deployment", NS, "llama-decode", 2, {"app": "x"})
        server.add_pod(NS, "x-0", {"app": "x"}, ready=True)
        rules = [r if r["resources"] != ["pods"] else {**r, "verbs": ["get", "list", "watch"]}
                 for r in _rules("ClusterRole")]  # fmt: skip
        server.grant(rules)
        actuator = KubernetesActuator(server.transport(retries=0), clock)
        target = ScaleTargetRef(api_version="apps/v1", kind="Deployment", name="llama-decode")

        with pytest.raises(Forbidden, match='cannot patch resource "pods"'):
            actuator.prefer_removal(NS, target, "app=x", {"x-0": 1.0})


def test_the_lease_is_granted_in_pdscalers_namespace_only(
    emulator: ApiServerEmulator, clock: FakeClock
) -> None:
    lease = LeaseConfig(NS, "pdscaler-leader", "pdscaler-0")
    elector = LeaseElector(emulator.transport(retries=0), lease, clock)

    assert not elector.step()
    assert "Forbidden" in elector.status().message

"""What the actuator tells the engine about a target beyond its size: another autoscaler
driving it, pods that cannot be placed; and how it sizes a StormService role."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from pdscaler.actuator.kubernetes import KubernetesActuator
from pdscaler.actuator.transport import ActuationError
from pdscaler.control.clock import FakeClock
from pdscaler.domain.errors import Conflict, NotFound
from pdscaler.domain.policy import ScaleTargetRef
from tests.kube.emulator import ApiServerEmulator

NS = "inference"
DECODE = ScaleTargetRef(api_version="apps/v1", kind="Deployment", name="llama-decode")
STORM = "orchestration.aibrix.ai/v1alpha1"


@pytest.fixture
def emulator() -> Iterator[ApiServerEmulator]:
    with ApiServerEmulator() as server:
        server.add_workload("apps/v1", "Deployment", NS, "llama-decode", 3,
                            {"app": "llama-decode"})  # fmt: skip
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC))


@pytest.fixture
def actuator(emulator: ApiServerEmulator, clock: FakeClock) -> KubernetesActuator:
    return KubernetesActuator(emulator.transport(), clock)


def _hpa(target: str, kind: str = "Deployment") -> dict[str, object]:
    return {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target},
            "minReplicas": 1, "maxReplicas": 10}  # fmt: skip


# -- another autoscaler ----------------------------------------------------------------------


def test_a_target_an_hpa_drives_is_reported(
    emulator: ApiServerEmulator, actuator: KubernetesActuator
) -> None:
    emulator.add_object("autoscaling/v2", "HorizontalPodAutoscaler", NS, "decode-hpa",
                        _hpa("llama-decode"))  # fmt: skip

    assert actuator.read_scale(NS, DECODE).managed_by == "HPA inference/decode-hpa"


def test_a_scaledobject_targets_a_deployment_by_default(
    emulator: ApiServerEmulator, actuator: KubernetesActuator
) -> None:
    emulator.add_object("keda.sh/v1alpha1", "ScaledObject", NS, "decode-keda",
                        {"scaleTargetRef": {"name": "llama-decode"}})  # fmt: skip

    assert actuator.read_scale(NS, DECODE).managed_by == "ScaledObject inference/decode-keda"


@pytest.mark.parametrize(
    ("namespace", "spec"),
    [
        (NS, _hpa("llama-prefill")),  # another target
        (NS, _hpa("llama-decode", kind="StatefulSet")),  # another kind of the same name
        ("elsewhere", _hpa("llama-decode")),  # another namespace
    ],
)
def test_autoscalers_of_other_targets_do_not_count(
    emulator: ApiServerEmulator,
    actuator: KubernetesActuator,
    namespace: str,
    spec: dict[str, object],
) -> None:
    emulator.add_object("autoscaling/v2", "HorizontalPodAutoscaler", namespace, "hpa", spec)

    assert actuator.read_scale(NS, DECODE).managed_by is None


def test_autoscalers_are_listed_once_per_namespace_and_period(
    emulator: ApiServerEmulator, actuator: KubernetesActuator, clock: FakeClock
) -> None:
    for _ in range(3):
        actuator.read_scale(NS, DECODE)
    clock.advance(31)
    actuator.read_scale(NS, DECODE)

    lists = [r for r in emulator.requests if r[1].endswith("/horizontalpodautoscalers")]
    assert len(lists) == 2


def test_autoscalers_that_cannot_be_listed_do_not_fail_the_read(
    emulator: ApiServerEmulator, actuator: KubernetesActuator
) -> None:
    emulator.add_object("autoscaling/v2", "HorizontalPodAutoscaler", NS, "decode-hpa",
                        _hpa("llama-decode"))  # fmt: skip
    everything_but_hpas = ["deployments/scale", "pods", "scaledobjects"]
    emulator.grant([{"apiGroups": ["*"], "resources": everything_but_hpas, "verbs": ["*"]}])

    state = actuator.read_scale(NS, DECODE)

    assert state.spec_replicas == 3
    assert state.managed_by is None  # unknown: not cached, asked again on the next read
    emulator.grant([{"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"],
                     "verbs": ["list"]}])  # fmt: skip
    assert actuator.read_scale(NS, DECODE).managed_by == "HPA inference/decode-hpa"


# -- placement -------------------------------------------------------------------------------


def test_pods_unplaced_for_longer_than_the_threshold_are_unschedulable(
    emulator: ApiServerEmulator, actuator: KubernetesActuator, clock: FakeClock
) -> None:
    labels = {"app": "llama-decode"}
    emulator.add_pod(NS, "ready-0", labels, ready=True)
    emulator.add_pod(NS, "long-unplaced", labels, ready=False,
                     unschedulable_since=clock.now() - timedelta(minutes=5))  # fmt: skip
    emulator.add_pod(NS, "just-unplaced", labels, ready=False,
                     unschedulable_since=clock.now() - timedelta(seconds=10))  # fmt: skip

    state = actuator.read_scale(NS, DECODE)

    assert (state.ready_replicas, state.pending_replicas, state.unschedulable) == (1, 2, 1)


# -- StormService roles ----------------------------------------------------------------------


def _storm(prefill: int, decode: int) -> dict[str, object]:
    roles = [{"name": "prefill", "replicas": prefill, "template": {}},
             {"name": "decode", "replicas": decode, "template": {}}]  # fmt: skip
    return {"replicas": 1, "template": {"spec": {"roles": roles}}}


STORM_DECODE = ScaleTargetRef(api_version=STORM, kind="StormService", name="llama", role="decode")


def test_a_stormservice_role_is_read_from_its_replicas(
    emulator: ApiServerEmulator, actuator: KubernetesActuator
) -> None:
    emulator.add_object(STORM, "StormService", NS, "llama", _storm(2, 4))

    state = actuator.read_scale(NS, STORM_DECODE)

    assert state.spec_replicas == 4
    assert state.selector == "storm-service-name=llama,role-name=decode"


def test_a_stormservice_role_is_resized_by_a_json_patch_of_that_role_only(
    emulator: ApiServerEmulator, actuator: KubernetesActuator
) -> None:
    emulator.add_object(STORM, "StormService", NS, "llama", _storm(2, 4))
    state = actuator.read_scale(NS, STORM_DECODE)

    written = actuator.write_scale(NS, STORM_DECODE, 6, state.resource_version)

    roles = emulator.object(NS, "StormService", "llama")["spec"]["template"]["spec"]["roles"]
    assert [(r["name"], r["replicas"]) for r in roles] == [("prefill", 2), ("decode", 6)]
    assert emulator.object(NS, "StormService", "llama")["spec"]["replicas"] == 1
    assert written != state.resource_version
    patches = [r for r in emulator.requests if r[0] == "PATCH"]
    assert patches == [("PATCH", f"/apis/{STORM}/namespaces/{NS}/stormservices/llama",
                        "application/json-patch+json")]  # fmt: skip


def test_a_stormservice_changed_since_it_was_read_is_a_conflict(
    emulator: ApiServerEmulator, actuator: KubernetesActuator
) -> None:
    emulator.add_object(STORM, "StormService", NS, "llama", _storm(2, 4))
    state = actuator.read_scale(NS, STORM_DECODE)
    other = ScaleTargetRef(api_version=STORM, kind="StormService", name="llama", role="prefill")
    actuator.write_scale(NS, other, 3, None)  # someone else resizes the other role

    with pytest.raises(Conflict):
        actuator.write_scale(NS, STORM_DECODE, 6, state.resource_version)

    roles = emulator.object(NS, "StormService", "llama")["spec"]["template"]["spec"]["roles"]
    assert [r["replicas"] for r in roles] == [3, 4]


def test_a_missing_role_is_not_found_and_names_the_roles_there_are(
    emulator: ApiServerEmulator, actuator: KubernetesActuator
) -> None:
    emulator.add_object(STORM, "StormService", NS, "llama", _storm(2, 4))
    ref = ScaleTargetRef(api_version=STORM, kind="StormService", name="llama", role="router")

    with pytest.raises(NotFound, match="prefill, decode"):
        actuator.read_scale(NS, ref)


def test_a_role_without_replicas_is_given_some(
    emulator: ApiServerEmulator, actuator: KubernetesActuator
) -> None:
    roles = [{"name": "prefill"}, {"name": "decode", "replicas": 1}]  # prefill: none yet
    emulator.add_object(STORM, "StormService", NS, "llama",
                        {"replicas": 1, "template": {"spec": {"roles": roles}}})  # fmt: skip
    ref = ScaleTargetRef(api_version=STORM, kind="StormService", name="llama", role="prefill")
    state = actuator.read_scale(NS, ref)

    actuator.write_scale(NS, ref, 2, state.resource_version)

    assert state.spec_replicas == 0
    stored = emulator.object(NS, "StormService", "llama")["spec"]["template"]["spec"]["roles"]
    assert stored[0]["replicas"] == 2


def test_a_role_of_pod_groups_counts_each_group_once(
    emulator: ApiServerEmulator, actuator: KubernetesActuator
) -> None:
    roles = [{"name": "decode", "replicas": 1, "podGroupSize": 2}]
    emulator.add_object(STORM, "StormService", NS, "llama",
                        {"replicas": 1, "template": {"spec": {"roles": roles}}})  # fmt: skip
    for index in ("0", "1"):
        labels = {"storm-service-name": "llama", "role-name": "decode",
                  "stormservice.orchestration.aibrix.ai/pod-group-index": index}  # fmt: skip
        emulator.add_pod(NS, f"llama-decode-g0-{index}", labels, ready=True)

    state = actuator.read_scale(NS, STORM_DECODE)

    assert (state.spec_replicas, state.ready_replicas) == (1, 1)


def test_two_roles_of_one_name_are_refused(
    emulator: ApiServerEmulator, actuator: KubernetesActuator
) -> None:
    roles = [{"name": "decode", "replicas": 1}, {"name": "decode", "replicas": 2}]
    emulator.add_object(STORM, "StormService", NS, "llama",
                        {"replicas": 1, "template": {"spec": {"roles": roles}}})  # fmt: skip

    with pytest.raises(ActuationError, match="2 roles named 'decode'"):
        actuator.read_scale(NS, STORM_DECODE)

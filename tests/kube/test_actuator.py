"""The Kubernetes actuator, through the real kubernetes client, against the API server
emulator: /scale reads and optimistic writes for built-in and custom kinds, and errors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from pdscaler.actuator.kubernetes import KubernetesActuator
from pdscaler.actuator.transport import ActuationError
from pdscaler.control.clock import FakeClock
from pdscaler.domain.errors import Conflict, NotFound, Unavailable
from pdscaler.domain.policy import ScaleTargetRef
from tests.kube.emulator import ApiServerEmulator

NS = "inference"
DEPLOYMENT = ScaleTargetRef(api_version="apps/v1", kind="Deployment", name="llama-decode")
LWS = ScaleTargetRef(
    api_version="leaderworkerset.x-k8s.io/v1", kind="LeaderWorkerSet", name="dsv3-prefill"
)


@pytest.fixture
def emulator() -> Iterator[ApiServerEmulator]:
    with ApiServerEmulator() as server:
        server.add_workload("apps/v1", "Deployment", NS, "llama-decode", 3,
                            {"app": "llama-decode"})  # fmt: skip
        server.add_workload("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", NS,
                            "dsv3-prefill", 2, {"leaderworkerset.sigs.k8s.io/name":
                                                "dsv3-prefill"})  # fmt: skip
        yield server


@pytest.fixture
def actuator(emulator: ApiServerEmulator) -> KubernetesActuator:
    return KubernetesActuator(emulator.transport(), FakeClock(datetime.now(UTC)))


def test_reads_spec_ready_and_pending_from_scale_and_pods(
    emulator: ApiServerEmulator, actuator: KubernetesActuator
) -> None:
    for i, ready in enumerate((True, True, False)):
        emulator.add_pod(NS, f"llama-decode-abc-{i}", {"app": "llama-decode"}, ready=ready)
    emulator.add_pod(NS, "other-0", {"app": "other"}, ready=True)

    state = actuator.read_scale(NS, DEPLOYMENT)

    assert (state.spec_replicas, state.ready_replicas, state.pending_replicas) == (3, 2, 1)
    assert state.selector == "app=llama-decode"
    assert state.resource_version


def test_writes_with_the_version_read(
    emulator: ApiServerEmulator, actuator: KubernetesActuator
) -> None:
    state = actuator.read_scale(NS, DEPLOYMENT)

    written = actuator.write_scale(NS, DEPLOYMENT, 5, state.resource_version)

    assert emulator.replicas(NS, "Deployment", "llama-decode") == 5
    assert written
    assert written != state.resource_version
    writes = [r for r in emulator.requests if r[0] in ("PUT", "PATCH")]
    assert writes == [("PUT", f"/apis/apps/v1/namespaces/{NS}/deployments/llama-decode/scale",
                       "application/json")]  # fmt: skip


def test_a_target_changed_since_it_was_read_is_a_conflict_not_an_overwrite(
    emulator: ApiServerEmulator, actuator: KubernetesActuator
) -> None:
    state = actuator.read_scale(NS, DEPLOYMENT)
    emulator.set_replicas(NS, "Deployment", "llama-decode", 7)  # someone else writes

    with pytest.raises(Conflict, match="409"):
        actuator.write_scale(NS, DEPLOYMENT, 5, state.resource_version)

    assert emulator.replicas(NS, "Deployment", "llama-decode") == 7


def test_custom_resources_are_found_by_discovery(
    emulator: ApiServerEmulator, actuator: KubernetesActuator
) -> None:
    state = actuator.read_scale(NS, LWS)
    actuator.write_scale(NS, LWS, 3, state.resource_version)
    actuator.read_scale(NS, LWS)

    assert emulator.replicas(NS, "LeaderWorkerSet", "dsv3-prefill") == 3
    discovery = [r for r in emulator.requests if r[1] == "/apis/leaderworkerset.x-k8s.io/v1"]
    assert len(discovery) == 1  # the plural is remembered


@pytest.mark.parametrize(
    ("target", "error"),
    [
        (ScaleTargetRef(api_version="apps/v1", kind="Deployment", name="nope"), NotFound),
        (ScaleTargetRef(api_version="apps/v1", kind="Gadget", name="x"), NotFound),
        (ScaleTargetRef(api_version="example.com/v1", kind="Gadget", name="x"), NotFound),
    ],
)
def test_missing_targets_are_not_found(
    actuator: KubernetesActuator, target: ScaleTargetRef, error: type[Exception]
) -> None:
    with pytest.raises(error):
        actuator.read_scale(NS, target)


def test_an_invalid_write_keeps_its_status(actuator: KubernetesActuator) -> None:
    with pytest.raises(ActuationError) as raised:
        actuator.write_scale(NS, DEPLOYMENT, -1, None)

    assert raised.value.status == 422


def test_throttling_is_retried_after_the_pause_asked_for(
    emulator: ApiServerEmulator, actuator: KubernetesActuator
) -> None:
    emulator.fail_next(429, "TooManyRequests", retry_after=1)

    state = actuator.read_scale(NS, DEPLOYMENT)

    assert state.spec_replicas == 3


def test_server_errors_are_retried_a_bounded_number_of_times(
    emulator: ApiServerEmulator, actuator: KubernetesActuator
) -> None:
    emulator.fail_next(503, "ServiceUnavailable", times=5)

    with pytest.raises(Unavailable, match="503"):
        actuator.read_scale(NS, DEPLOYMENT)

    scale_reads = [r for r in emulator.requests if r[1].endswith("/scale")]
    assert len(scale_reads) == 3  # one try and two retries, no more


def test_a_reset_connection_is_unavailable(
    emulator: ApiServerEmulator, actuator: KubernetesActuator
) -> None:
    actuator.read_scale(NS, DEPLOYMENT)  # discovery done
    for _ in range(3):
        emulator.reset_next()

    with pytest.raises(Unavailable):
        actuator.read_scale(NS, DEPLOYMENT)

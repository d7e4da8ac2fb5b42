"""The controller acting on the API server emulator through the Kubernetes actuator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pdscaler.actuator.kubernetes import KubernetesActuator
from pdscaler.control.clock import FakeClock
from pdscaler.domain.decision import DecisionStatus
from pdscaler.domain.policy import Role, ScaleTargetRef, parse_policy
from pdscaler.domain.signals import ScaleState
from pdscaler.store.db import Database
from tests.control.harness import Harness
from tests.factories import policy_doc
from tests.kube.emulator import ApiServerEmulator

P, D = Role.PREFILL, Role.DECODE


@pytest.fixture
def emulator() -> Iterator[ApiServerEmulator]:
    with ApiServerEmulator() as server:
        for role, replicas in ((P, 2), (D, 4)):
            name = f"llama-{role.value}"
            server.add_workload("apps/v1", "Deployment", "inference", name, replicas,
                                {"app": name})  # fmt: skip
            for i in range(replicas):
                server.add_pod("inference", f"{name}-x-{i}", {"app": name}, ready=True)
        yield server


@pytest.fixture
def h(db: Database, clock: FakeClock, emulator: ApiServerEmulator) -> Harness:
    harness = Harness(db, clock)
    harness.actuator = KubernetesActuator(emulator.transport(retries=1), clock)  # type: ignore[assignment]
    harness.controller = harness.new_controller()
    targets = {"spec": {"prefill": {"scaleTargetRef": {"name": "llama-prefill"}},
                        "decode": {"scaleTargetRef": {"name": "llama-decode"}}}}  # fmt: skip
    policy = parse_policy(policy_doc(targets))
    harness.policies.create(policy, author="t", comment="", now=clock.now())
    return harness


def test_a_tick_scales_through_the_scale_subresource(
    h: Harness, emulator: ApiServerEmulator
) -> None:
    h.observe(P, queuedPrefillTokens=80_000)
    h.observe(D, kvCacheUtilization=0.75)

    h.tick()

    assert emulator.replicas("inference", "Deployment", "llama-prefill") == 5
    record = h.last(P).record
    assert record.status is DecisionStatus.APPLIED
    assert (record.current_replicas, record.ready_replicas) == (2, 2)
    assert [r[0] for r in emulator.requests if r[1].endswith("/scale")].count("PUT") == 1


def test_an_outside_write_between_read_and_write_is_a_conflict(
    h: Harness, emulator: ApiServerEmulator
) -> None:
    h.observe(P, queuedPrefillTokens=80_000)
    h.observe(D, kvCacheUtilization=0.75)
    actuator = h.actuator
    read = actuator.read_scale

    def read_then_someone_writes(namespace: str, target: ScaleTargetRef) -> ScaleState:
        state = read(namespace, target)
        if target.name == "llama-prefill":
            emulator.set_replicas(namespace, "Deployment", "llama-prefill", 3)
        return state

    actuator.read_scale = read_then_someone_writes  # type: ignore[method-assign]
    h.tick()

    assert h.last(P).record.status is DecisionStatus.CONFLICT
    assert "409" in (h.last(P).record.error or "")
    assert emulator.replicas("inference", "Deployment", "llama-prefill") == 3

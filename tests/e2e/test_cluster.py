"""The scale and leader scenarios against a real cluster (kind, k3s, any).

Skipped unless ``PDSCALER_E2E_KUBECONFIG`` names a kubeconfig whose user may create a
namespace and Deployments in it. Each run works in a namespace of its own, deleted after.

    PDSCALER_E2E_KUBECONFIG=~/.kube/config .venv/bin/python -m pytest -m e2e tests/e2e
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from kubernetes import client, config

from pdscaler.actuator.connect import kubernetes_transport
from pdscaler.actuator.kubernetes import KubernetesActuator
from pdscaler.actuator.leader import LeaseConfig, LeaseElector
from pdscaler.actuator.transport import Transport
from pdscaler.config import KubernetesSettings
from pdscaler.control.clock import SystemClock
from pdscaler.domain.errors import Conflict
from pdscaler.domain.policy import ScaleTargetRef

KUBECONFIG = os.environ.get("PDSCALER_E2E_KUBECONFIG")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not KUBECONFIG, reason="PDSCALER_E2E_KUBECONFIG is not set"),
]
TARGET = ScaleTargetRef(api_version="apps/v1", kind="Deployment", name="e2e-decode")


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    assert KUBECONFIG is not None
    api = config.new_client_from_config(config_file=KUBECONFIG)
    name = f"pdscaler-e2e-{uuid.uuid4().hex[:6]}"
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    core.create_namespace({"metadata": {"name": name}})
    labels = {"app": "e2e-decode"}
    container = {"name": "pause", "image": "registry.k8s.io/pause:3.10",
                 "resources": {"requests": {"cpu": "1m", "memory": "8Mi"}}}  # fmt: skip
    apps.create_namespaced_deployment(name, {
        "metadata": {"name": TARGET.name},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [container]}}},
    })  # fmt: skip
    try:
        yield name
    finally:
        core.delete_namespace(name)


def _transport() -> Transport:
    return kubernetes_transport(KubernetesSettings(kubeconfig=Path(str(KUBECONFIG))))


def _until(check: object, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(1)
    pytest.fail("the cluster did not get there in time")


def test_scale_is_read_and_written_with_optimistic_concurrency(namespace: str) -> None:
    actuator = KubernetesActuator(_transport(), SystemClock())
    state = actuator.read_scale(namespace, TARGET)

    actuator.write_scale(namespace, TARGET, 2, state.resource_version)

    assert actuator.read_scale(namespace, TARGET).spec_replicas == 2
    with pytest.raises(Conflict):
        actuator.write_scale(namespace, TARGET, 3, state.resource_version)  # stale version
    _until(lambda: actuator.read_scale(namespace, TARGET).ready_replicas == 2)


def test_one_leader_and_a_takeover_when_it_stops(namespace: str) -> None:
    clock = SystemClock()
    timing = {"lease_duration": timedelta(seconds=4), "renew_deadline": timedelta(seconds=3),
              "retry_period": timedelta(seconds=1)}  # fmt: skip
    a, b = (LeaseElector(_transport(), LeaseConfig(namespace, "e2e-leader", who, **timing), clock)
            for who in ("e2e-a", "e2e-b"))  # fmt: skip

    assert a.step()
    assert not b.step()
    # a stops renewing (a crash): b takes over once the lease has run out.
    _until(b.step, timeout_s=30)
    assert not a.confirm()
    b.release()
    assert a.step()

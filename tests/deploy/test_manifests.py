"""Every YAML document under deploy/ is a valid object of its kind, and every
kustomization builds to valid objects."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from pdscaler.domain.errors import InvalidInput
from tests.deploy import kustomize
from tests.deploy.manifests import (
    DEPLOY,
    Invalid,
    kustomization_dirs,
    name,
    validate,
    yaml_files,
)


@pytest.mark.parametrize("path", yaml_files(), ids=name)
def test_every_document_is_valid(path: Path) -> None:
    if kustomize.kustomization_file(path.parent) == path:
        kustomize.load_kustomization(path.parent)  # its keys are ones the renderer knows
        return
    documents = kustomize.read_documents(path)

    assert documents, f"{name(path)} holds no document"
    for document in documents:
        validate(document)


@pytest.mark.parametrize("directory", kustomization_dirs(DEPLOY), ids=name)
def test_every_kustomization_builds_to_valid_objects(directory: Path) -> None:
    rendered = kustomize.build(directory)

    assert rendered
    for resource in rendered:
        validate(resource)


def test_deploy_tree_is_covered() -> None:
    """The parametrized tests above see every part of deploy/."""
    directories = {name(d) for d in kustomization_dirs(DEPLOY)}

    assert {"deploy/base", "deploy/overlays/no-drain"} <= directories
    assert {
        "deploy/overlays/postgres-in-cluster",
        "deploy/overlays/postgres-external",
        "deploy/examples/vllm-deployments",
        "deploy/examples/vllm-lws",
        "deploy/examples/sglang-deployments",
    } <= directories
    assert len(yaml_files()) > 20


# -- the checks can fail -----------------------------------------------------------------


def _load(relative: str, kind: str) -> dict[str, Any]:
    documents = yaml.safe_load_all((DEPLOY / relative).read_text())
    return copy.deepcopy(next(d for d in documents if d and d["kind"] == kind))


def _set(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *walk, last = path.split(".")
    node: Any = document
    for key in walk:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return document


_DELETE = object()
_POD = "spec.template.spec"
_LWS_POD = "spec.leaderWorkerTemplate.workerTemplate.spec"

BROKEN = [
    ("base/deployment.yaml", "Deployment", f"{_POD}.containers.0.ports.0.containerPort", "http"),
    ("base/deployment.yaml", "Deployment", f"{_POD}.containers.0.livenessProbe.httpGet.pth", "/"),
    ("base/deployment.yaml", "Deployment", "spec.replicas", "2"),
    ("base/configmap.yaml", "ConfigMap", "data.PDSCALER_LOOP__ENABLED", True),
    ("base/rbac.yaml", "ClusterRole", "rules.0.verb", ["get"]),
    ("base/pdb.yaml", "PodDisruptionBudget", "spec.selector", "app=pdscaler"),
    ("examples/vllm-lws/decode.yaml", "LeaderWorkerSet", "spec.leaderWorkerTemplate.size", 0),
    ("examples/vllm-lws/decode.yaml", "LeaderWorkerSet", "spec.leaderWorkerTemplate.sise", 2),
    ("examples/vllm-lws/decode.yaml", "LeaderWorkerSet", f"{_LWS_POD}.containers", _DELETE),
    ("examples/vllm-lws/decode.yaml", "LeaderWorkerSet", f"{_LWS_POD}.containers.0.prots", []),
    ("examples/vllm-lws/decode.yaml", "LeaderWorkerSet", "spec.startupPolicy", "Whenever"),
    ("examples/vllm-deployments/podmonitor.yaml", "PodMonitor", "spec.selector.matchLabel", {}),
    ("examples/vllm-deployments/podmonitor.yaml", "PodMonitor", "spec.podMetricEndpoints", []),
    (
        "examples/vllm-deployments/podmonitor.yaml",
        "PodMonitor",
        "spec.podMetricsEndpoints.0.relabelings.0.target_label",
        "role",
    ),
]


@pytest.mark.parametrize(
    ("relative", "kind", "path", "value"),
    BROKEN,
    ids=[f"{kind}:{path.rsplit('.', 1)[-1]}" for _, kind, path, _ in BROKEN],
)
def test_a_broken_document_is_invalid(relative: str, kind: str, path: str, value: Any) -> None:
    document = _set(_load(relative, kind), path, value)

    with pytest.raises(Invalid):
        validate(document)


def test_a_broken_policy_is_invalid() -> None:
    policy = _set(_load("examples/vllm-deployments/policy.yaml", "PDScalingPolicy"),
                  "spec.decode.maxReplica", 4)  # fmt: skip

    with pytest.raises(InvalidInput, match="maxReplica"):
        validate(policy)


def test_a_kind_without_schema_or_check_is_invalid() -> None:
    service_monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {},
    }

    with pytest.raises(Invalid, match="no schema"):
        validate(service_monitor)

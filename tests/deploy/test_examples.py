"""The examples: each P/D pair, its PodMonitor and its policy fit together, and every
engine pod drains before it stops."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import yaml

from pdscaler.domain.policy import Policy, Role, parse_policy
from pdscaler.metrics.presets import load_preset
from tests.deploy import kustomize
from tests.deploy.manifests import EXAMPLES, Resource, containers, pod_templates, selects

PAIRS = ["vllm-deployments", "vllm-lws", "sglang-deployments"]
ROLES = (Role.PREFILL, Role.DECODE)
DRAIN_SCRIPT = "/etc/engine-drain/drain.py"
# The gauges of requests in flight that the drain must wait for, per engine.
IN_FLIGHT = {
    "vllm": {"vllm:num_requests_running", "vllm:num_requests_waiting"},
    "sglang": {"sglang:num_running_reqs", "sglang:num_queue_reqs"},
}
# Time the engine keeps, after the drain gave up, to stop before it is killed.
STOP_S = 20


@dataclass(frozen=True)
class Pair:
    directory: Path
    namespace: str
    resources: tuple[Resource, ...]
    policy: Policy

    def target(self, role: Role) -> Resource:
        ref = self.policy.spec.pool(role).scale_target_ref
        (found,) = [
            r
            for r in self.resources
            if (r["apiVersion"], r["kind"], r["metadata"]["name"])
            == (ref.api_version, ref.kind, ref.name)
        ]
        return found

    def pod(self, role: Role) -> Resource:
        templates = [t for _, t in pod_templates(self.target(role))]
        assert len(templates) == 1, "one pod template per pool"
        return templates[0]


@cache
def load_pair(name: str) -> Pair:
    directory = EXAMPLES / name
    document = yaml.safe_load((directory / "policy.yaml").read_text())
    return Pair(
        directory=directory,
        namespace=kustomize.load_kustomization(directory)["namespace"],
        resources=tuple(kustomize.build(directory)),
        policy=parse_policy(document),
    )


@pytest.fixture(params=PAIRS)
def pair(request: pytest.FixtureRequest) -> Pair:
    return load_pair(request.param)


def test_the_policy_is_not_part_of_the_kustomization(pair: Pair) -> None:
    """PDScalingPolicy is no Kubernetes resource: pdscaler stores it, not the cluster."""
    assert "policy.yaml" not in kustomize.load_kustomization(pair.directory)["resources"]
    assert all(r["kind"] != "PDScalingPolicy" for r in pair.resources)


def test_the_policy_scales_the_pair_in_its_namespace(pair: Pair) -> None:
    policy = pair.policy

    assert policy.metadata.namespace == pair.namespace
    assert {r["metadata"]["namespace"] for r in pair.resources} == {pair.namespace}
    assert policy.spec.mode.value == "shadow"
    for role in ROLES:
        target = pair.target(role)
        # The size is pdscaler's: a replicas field would reset it at every apply.
        assert "replicas" not in target["spec"], role
        assert pair.pod(role)["metadata"]["labels"] != pair.pod(_other(role))["metadata"]["labels"]


def _other(role: Role) -> Role:
    return Role.DECODE if role is Role.PREFILL else Role.PREFILL


def _gpus(container: Resource) -> int:
    resources = container.get("resources", {})
    limit = int(resources.get("limits", {}).get("nvidia.com/gpu", 0))
    assert int(resources.get("requests", {}).get("nvidia.com/gpu", limit)) == limit
    return limit


def test_gpus_per_replica_are_the_gpus_of_one_replica(pair: Pair) -> None:
    for role in ROLES:
        target = pair.target(role)
        pods_per_replica = target["spec"].get("leaderWorkerTemplate", {}).get("size", 1)
        gpus = pods_per_replica * sum(_gpus(c) for c in containers(pair.pod(role)))

        assert gpus > 0, role
        assert pair.policy.spec.pool(role).gpus_per_replica == gpus, role


def _command_line(container: Resource) -> str:
    return " ".join([*container.get("command", []), *container.get("args", [])])


def test_metrics_selector_names_the_served_model(pair: Pair) -> None:
    for role in ROLES:
        pool = pair.policy.spec.pool(role)
        model = (pool.metrics_selector or {})["model_name"]
        (engine,) = [c for c in containers(pair.pod(role)) if _gpus(c)]

        assert re.search(rf"(^|[\s=]){re.escape(model)}(\s|$)", _command_line(engine)), role


def test_the_pod_monitor_scrapes_both_pools_with_the_role_label(pair: Pair) -> None:
    (monitor,) = [r for r in pair.resources if r["kind"] == "PodMonitor"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    role_label = load_preset(pair.policy.spec.engine.value).role_label

    for role in ROLES:
        pod = pair.pod(role)
        ports = {p["name"] for c in containers(pod) for p in c.get("ports", [])}
        assert selects(monitor["spec"]["selector"], pod["metadata"]["labels"]), role
        assert endpoint["port"] in ports, role
        if pair.policy.spec.engine.value == "vllm":
            # vLLM has no role label: it is copied from a pod label whose value is the role.
            (rule,) = [r for r in endpoint["relabelings"] if r["targetLabel"] == role_label]
            (source,) = rule["sourceLabels"]
            label_keys = {_meta_label(k): k for k in pod["metadata"]["labels"]}
            assert pod["metadata"]["labels"][label_keys[source]] == role
        else:
            # SGLang sets engine_type itself, from its disaggregation mode.
            assert role_label == "engine_type"
            (engine,) = [c for c in containers(pod) if _gpus(c)]
            assert f"--disaggregation-mode={role}" in engine["args"]


def _meta_label(key: str) -> str:
    """The Prometheus service-discovery label of a pod label."""
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^A-Za-z0-9_]", "_", key)


def _drain_arguments(container: Resource) -> dict[str, list[str]]:
    """The --name=value arguments the preStop hook passes to drain.py."""
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    text = " ".join(command)
    assert DRAIN_SCRIPT in text, "the preStop hook runs the drain script"
    arguments: dict[str, list[str]] = {}
    for key, value in re.findall(r"--(\w+)=(\S+)", text[text.index(DRAIN_SCRIPT) :]):
        arguments.setdefault(key, []).append(value)
    return arguments


def test_every_engine_pod_drains_before_it_stops(pair: Pair) -> None:
    engine = pair.policy.spec.engine.value
    preset_names = {n for f in load_preset(engine).families.values() for n in f.names}
    (configmap,) = [r for r in pair.resources if r["kind"] == "ConfigMap"]

    assert configmap["metadata"]["name"] == "engine-drain"
    for role in ROLES:
        pod = pair.pod(role)
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        grace_s = pod["spec"]["terminationGracePeriodSeconds"]
        for container in (c for c in containers(pod) if _gpus(c)):
            arguments = _drain_arguments(container)
            gauges = set(arguments["gauge"])
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}

            assert IN_FLIGHT[engine] <= gauges, role
            assert gauges <= preset_names, f"{role}: not metric names of the {engine} preset"
            assert float(arguments["timeout"][0]) + STOP_S <= grace_s, role
            assert grace_s >= 600, role
            volume = volumes[mounts[str(Path(DRAIN_SCRIPT).parent)]]
            assert volume["configMap"]["name"] == "engine-drain", role


def test_a_prefill_pod_waits_longer_for_its_kv_cache_to_be_read_on_vllm() -> None:
    """vLLM counts a finished prefill as done while decode has still to read its KV cache;
    SGLang counts it in its inflight queue, which the drain waits for anyway."""
    pair = load_pair("vllm-deployments")
    lingers = {
        role: float(_drain_arguments(c)["linger"][0])
        for role in ROLES
        for c in containers(pair.pod(role))
        if _gpus(c)
    }

    assert lingers["prefill"] >= 30 > lingers["decode"]
    sglang = load_pair("sglang-deployments")
    (engine,) = [c for c in containers(sglang.pod("prefill")) if _gpus(c)]
    assert "sglang:num_prefill_inflight_queue_reqs" in _drain_arguments(engine)["gauge"]

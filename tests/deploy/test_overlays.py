"""What the overlays install: pdscaler's RBAC, its Deployment and the objects around it."""

from __future__ import annotations

import base64
import os
from datetime import timedelta
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import pytest

import pdscaler
from pdscaler.config import SettingsError, load_settings
from tests.deploy import kustomize
from tests.deploy.manifests import (
    OVERLAYS,
    Resource,
    containers,
    find,
    pod_templates,
    selects,
    setting_names,
)

NAMESPACE = "pdscaler"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 (a pod listens on its own network namespace)
OVERLAY_NAMES = ["postgres-external", "postgres-in-cluster", "no-drain"]

SCALE_VERBS = ["get", "update", "patch"]
WATCH_VERBS = ["get", "list", "watch"]
# The ClusterRole, rule by rule. A change here must be deliberate: it changes what every
# installation lets pdscaler do.
CLUSTER_RULES = [
    {"apiGroups": ["apps"], "resources": ["deployments/scale", "statefulsets/scale"],
     "verbs": SCALE_VERBS},
    {"apiGroups": ["leaderworkerset.x-k8s.io"], "resources": ["leaderworkersets/scale"],
     "verbs": SCALE_VERBS},
    {"apiGroups": ["workloads.x-k8s.io"], "resources": ["rolebasedgroupscalingadapters/scale"],
     "verbs": SCALE_VERBS},
    {"apiGroups": ["nvidia.com"], "resources": ["dynamographdeploymentscalingadapters/scale"],
     "verbs": SCALE_VERBS},
    {"apiGroups": ["orchestration.aibrix.ai"], "resources": ["stormservices"],
     "verbs": ["get", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": [*WATCH_VERBS, "patch"]},
    {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"],
     "verbs": WATCH_VERBS},
    {"apiGroups": ["keda.sh"], "resources": ["scaledobjects"], "verbs": WATCH_VERBS},
]  # fmt: skip
NO_DRAIN_RULES = [
    {**rule, "verbs": WATCH_VERBS} if rule["resources"] == ["pods"] else rule
    for rule in CLUSTER_RULES
]
LEASE_RULES = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
     "verbs": ["get", "create", "update"]},
]  # fmt: skip
# The leader-election settings added with the manifests; read from the Settings model.
NEW_KUBERNETES_SETTINGS = [
    "PDSCALER_KUBERNETES__LEASE_NAMESPACE",
    "PDSCALER_KUBERNETES__LEASE_DURATION",
    "PDSCALER_KUBERNETES__RENEW_DEADLINE",
    "PDSCALER_KUBERNETES__RETRY_PERIOD",
    "PDSCALER_KUBERNETES__QPS",
    "PDSCALER_KUBERNETES__BURST",
]
# Stand-ins for what the Secret and the downward API provide at run time.
SECRET_SAMPLES = {
    "database-url": "postgresql+psycopg://pdscaler:secret@db.example:5432/pdscaler",
    "api-tokens": '[{"name": "admin", "role": "admin", "sha256": "' + "ab" * 32 + '"}]',
    "cursor-secret": "cd" * 32,
}
FIELD_SAMPLES = {"metadata.name": "pdscaler-7d9f-abcde", "metadata.namespace": NAMESPACE}


@cache
def _rendered(overlay: str) -> tuple[Resource, ...]:
    return tuple(kustomize.build(OVERLAYS / overlay))


@pytest.fixture(params=OVERLAY_NAMES)
def rendered(request: pytest.FixtureRequest) -> list[Resource]:
    return list(_rendered(request.param))


def pdscaler_pod(resources: list[Resource]) -> Resource:
    template: Resource = find(resources, "Deployment", "pdscaler")["spec"]["template"]
    return template


def pdscaler_container(resources: list[Resource], name: str = "pdscaler") -> Resource:
    (container,) = [c for c in containers(pdscaler_pod(resources)) if c["name"] == name]
    return container


# -- namespace and RBAC ------------------------------------------------------------------


def test_everything_is_in_the_pdscaler_namespace(rendered: list[Resource]) -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}

    for resource in rendered:
        namespace = resource["metadata"].get("namespace")
        if resource["kind"] in cluster_scoped:
            assert namespace is None, resource["metadata"]["name"]
        else:
            assert namespace == NAMESPACE, (resource["kind"], resource["metadata"]["name"])
    assert (
        find(rendered, "Namespace", NAMESPACE)["metadata"]["labels"][
            "pod-security.kubernetes.io/enforce"
        ]
        == "restricted"
    )


@pytest.mark.parametrize(
    ("overlay", "rules"),
    [
        ("postgres-external", CLUSTER_RULES),
        ("postgres-in-cluster", CLUSTER_RULES),
        ("no-drain", NO_DRAIN_RULES),
    ],
)
def test_cluster_role_grants_exactly(overlay: str, rules: list[dict[str, Any]]) -> None:
    role = find(list(_rendered(overlay)), "ClusterRole", "pdscaler")

    assert role["rules"] == rules
    text = repr(role)
    assert "*" not in text
    assert "secrets" not in text


def test_no_drain_takes_only_pod_patch_away() -> None:
    def grants(overlay: str) -> set[tuple[str, str, str]]:
        rules = find(list(_rendered(overlay)), "ClusterRole", "pdscaler")["rules"]
        return {(g, r, v) for rule in rules for g in rule["apiGroups"]
                for r in rule["resources"] for v in rule["verbs"]}  # fmt: skip

    assert grants("postgres-external") - grants("no-drain") == {("", "pods", "patch")}
    assert grants("no-drain") <= grants("postgres-external")


def test_service_account_is_bound_to_both_roles(rendered: list[Resource]) -> None:
    account = {"kind": "ServiceAccount", "name": "pdscaler", "namespace": NAMESPACE}
    find(rendered, "ServiceAccount", "pdscaler")
    lease_role = next(r for r in rendered if r["kind"] == "Role")
    bindings = [r for r in rendered if r["kind"] in ("RoleBinding", "ClusterRoleBinding")]

    assert lease_role["rules"] == LEASE_RULES
    assert lease_role["metadata"]["namespace"] == NAMESPACE
    assert sorted((b["kind"], b["roleRef"]["kind"]) for b in bindings) == [
        ("ClusterRoleBinding", "ClusterRole"),
        ("RoleBinding", "Role"),
    ]
    for binding in bindings:
        assert binding["subjects"] == [account]
        find(rendered, binding["roleRef"]["kind"], binding["roleRef"]["name"])
    assert pdscaler_pod(rendered)["spec"]["serviceAccountName"] == "pdscaler"


# -- the Deployment ----------------------------------------------------------------------


def test_two_replicas_of_this_release(rendered: list[Resource]) -> None:
    deployment = find(rendered, "Deployment", "pdscaler")
    container = pdscaler_container(rendered)

    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    for each in containers(pdscaler_pod(rendered)):
        assert each["image"] == f"ghcr.io/pdscaler/pdscaler:{pdscaler.__version__}"
    assert container["command"] == ["pdscaler", "serve"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert pdscaler_container(rendered, "migrate")["command"] == ["pdscaler", "db", "upgrade"]


def test_probes(rendered: list[Resource]) -> None:
    container = pdscaler_container(rendered)

    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def test_resources_are_requested_and_memory_limited(rendered: list[Resource]) -> None:
    for container in containers(pdscaler_pod(rendered)):
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), container["name"]
        assert "memory" in resources["limits"], container["name"]
    assert pdscaler_container(rendered)["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"memory": "1Gi"},
    }


def effective_security(pod: Resource, container: Resource) -> dict[str, Any]:
    """The container's security settings, the pod's filling in what it does not set."""
    return {**pod["spec"].get("securityContext", {}), **container.get("securityContext", {})}


def test_every_pod_in_the_namespace_runs_restricted(rendered: list[Resource]) -> None:
    """The namespace enforces the restricted Pod Security Standard: every pod must meet it."""
    templates = [t for r in rendered for _, t in pod_templates(r)]

    assert len(templates) == (2 if any(r["kind"] == "StatefulSet" for r in rendered) else 1)
    for template in templates:
        for container in containers(template):
            security = effective_security(template, container)
            assert security["runAsNonRoot"] is True, container["name"]
            assert security["runAsUser"] > 0, container["name"]
            assert security["allowPrivilegeEscalation"] is False, container["name"]
            assert security["readOnlyRootFilesystem"] is True, container["name"]
            assert security["capabilities"] == {"drop": ["ALL"]}, container["name"]
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}, container["name"]


def test_pdscaler_runs_as_uid_10001_with_writable_scratch(rendered: list[Resource]) -> None:
    pod = pdscaler_pod(rendered)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    data_dir = find(rendered, "ConfigMap", "pdscaler-settings")["data"]["PDSCALER_DATA_DIR"]

    for container in containers(pod):
        assert effective_security(pod, container)["runAsUser"] == 10001
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert set(mounts) == {"/tmp", data_dir}
        for volume in mounts.values():
            assert "emptyDir" in volumes[volume]


def test_replicas_spread_over_nodes_preferably(rendered: list[Resource]) -> None:
    pod = pdscaler_pod(rendered)
    constraints = pod["spec"]["topologySpreadConstraints"]

    assert "kubernetes.io/hostname" in {c["topologyKey"] for c in constraints}
    for constraint in constraints:
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
        assert selects(constraint["labelSelector"], pod["metadata"]["labels"])


def _env(container: Resource) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_secrets_and_identity_come_from_the_pod(rendered: list[Resource]) -> None:
    env = _env(pdscaler_container(rendered))
    database = (
        "pdscaler-postgres" if any(r["kind"] == "StatefulSet" for r in rendered)
        else "pdscaler-secrets"
    )  # fmt: skip

    assert env == {
        "PDSCALER_DATABASE__URL": {"secretKeyRef": {"name": database, "key": "database-url"}},
        "PDSCALER_API__TOKENS": {"secretKeyRef": {"name": "pdscaler-secrets", "key": "api-tokens"}},
        "PDSCALER_API__CURSOR_SECRET": {
            "secretKeyRef": {"name": "pdscaler-secrets", "key": "cursor-secret"}
        },
        "PDSCALER_LOOP__IDENTITY": {"fieldRef": {"fieldPath": "metadata.name"}},
        "PDSCALER_KUBERNETES__LEASE_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    }
    assert (
        _env(pdscaler_container(rendered, "migrate"))["PDSCALER_DATABASE__URL"]
        == (env["PDSCALER_DATABASE__URL"])
    )
    for container in containers(pdscaler_pod(rendered)):
        assert container["envFrom"] == [{"configMapRef": {"name": "pdscaler-settings"}}]
    # pdscaler-secrets is created by the user, never shipped.
    assert not [r for r in rendered if r["metadata"]["name"] == "pdscaler-secrets"]


def test_settings(rendered: list[Resource]) -> None:
    data = find(rendered, "ConfigMap", "pdscaler-settings")["data"]

    assert data == {
        "PDSCALER_API__HOST": ALL_INTERFACES,
        "PDSCALER_LOOP__ENABLED": "true",
        "PDSCALER_PROMETHEUS__URL": "http://prometheus-operated.monitoring.svc:9090",
        "PDSCALER_LOG_LEVEL": "INFO",
        "PDSCALER_LOG_FORMAT": "json",
        "PDSCALER_DATA_DIR": "/var/lib/pdscaler",
        "PDSCALER_KUBERNETES__LEASE_DURATION": "15s",
        "PDSCALER_KUBERNETES__RENEW_DEADLINE": "10s",
        "PDSCALER_KUBERNETES__RETRY_PERIOD": "2s",
    }


# -- the settings are pdscaler's ---------------------------------------------------------


def pod_environment(resources: list[Resource], container_name: str) -> dict[str, str]:
    """The PDSCALER_ environment of a container, as the kubelet would build it."""
    container = pdscaler_container(resources, container_name)
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        environment.update(find(resources, "ConfigMap", name)["data"])
    for item in container.get("env", []):
        value_from = item.get("valueFrom", {})
        if "value" in item:
            environment[item["name"]] = item["value"]
        elif "fieldRef" in value_from:
            environment[item["name"]] = FIELD_SAMPLES[value_from["fieldRef"]["fieldPath"]]
        else:
            ref = value_from["secretKeyRef"]
            generated = [r for r in resources if r["kind"] == "Secret"]
            if ref["name"] in {s["metadata"]["name"] for s in generated}:
                data = find(resources, "Secret", ref["name"])["data"]
                environment[item["name"]] = base64.b64decode(data[ref["key"]]).decode()
            else:
                environment[item["name"]] = SECRET_SAMPLES[ref["key"]]
    return environment


def test_every_pdscaler_variable_names_a_setting(rendered: list[Resource]) -> None:
    used = {
        name
        for container in ("migrate", "pdscaler")
        for name in pod_environment(rendered, container)
    }

    assert sorted(used - setting_names()) == []


def test_the_leader_election_settings_exist() -> None:
    """The settings the manifests and docs/deploy.md use for leader election and the
    client's rate limit, read from the Settings model itself."""
    assert sorted(set(NEW_KUBERNETES_SETTINGS) - setting_names()) == []


@pytest.mark.parametrize("container", ["migrate", "pdscaler"])
def test_pdscaler_starts_with_the_rendered_settings(
    rendered: list[Resource], container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in [v for v in os.environ if v.startswith("PDSCALER_")]:
        monkeypatch.delenv(variable)
    environment = pod_environment(rendered, container)
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)

    settings = load_settings()

    assert settings.api.host == ALL_INTERFACES
    assert settings.loop.enabled is True
    assert str(settings.data_dir) == "/var/lib/pdscaler"
    assert settings.database.url == environment["PDSCALER_DATABASE__URL"]
    assert settings.kubernetes.lease_namespace == NAMESPACE
    kubernetes = settings.kubernetes.model_dump()
    lease_timings = [kubernetes[f] for f in ("lease_duration", "renew_deadline", "retry_period")]
    assert lease_timings == [timedelta(seconds=s) for s in (15, 10, 2)]
    if container == "pdscaler":
        assert settings.loop.identity == FIELD_SAMPLES["metadata.name"]
        assert [t.name for t in settings.api.tokens] == ["admin"]


def test_service_links_are_off_because_they_would_stop_pdscaler(
    rendered: list[Resource], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kubernetes would inject <SERVICE>_SERVICE_HOST, <SERVICE>_PORT, ... for every
    Service of the namespace; for a Service named pdscaler, those are PDSCALER_ variables
    that are no setting, and pdscaler refuses to start on them."""
    services = [r["metadata"]["name"] for r in rendered if r["kind"] == "Service"]
    injected = {
        f"{service.upper().replace('-', '_')}_{suffix}": "x"
        for service in services
        for suffix in ("SERVICE_HOST", "SERVICE_PORT", "PORT")
    }

    with pytest.raises(SettingsError, match="PDSCALER_SERVICE_HOST: not a pdscaler setting"):
        load_settings(injected)
    assert pdscaler_pod(rendered)["spec"]["enableServiceLinks"] is False


# -- Service, PodDisruptionBudget --------------------------------------------------------


def test_service_and_budget_select_exactly_the_pdscaler_pods(rendered: list[Resource]) -> None:
    pod_labels = pdscaler_pod(rendered)["metadata"]["labels"]
    other_pods = [
        t["metadata"]["labels"]
        for r in rendered
        if r["metadata"]["name"] != "pdscaler"
        for _, t in pod_templates(r)
    ]
    service = find(rendered, "Service", "pdscaler")
    budget = find(rendered, "PodDisruptionBudget", "pdscaler")

    for selector in (
        {"matchLabels": service["spec"]["selector"]},
        budget["spec"]["selector"],
        find(rendered, "Deployment", "pdscaler")["spec"]["selector"],
    ):
        assert selects(selector, pod_labels)
        assert not any(selects(selector, labels) for labels in other_pods)
    assert budget["spec"]["minAvailable"] == 1


def test_service_exposes_the_api_on_port_80(rendered: list[Resource]) -> None:
    service = find(rendered, "Service", "pdscaler")

    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]


# -- postgres-in-cluster -----------------------------------------------------------------


def test_in_cluster_postgres_is_what_pdscaler_connects_to() -> None:
    rendered = list(_rendered("postgres-in-cluster"))
    secret = find(rendered, "Secret", "pdscaler-postgres")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    url = urlsplit(data["database-url"])
    statefulset = find(rendered, "StatefulSet", "pdscaler-postgres")
    service = find(rendered, "Service", "pdscaler-postgres")
    pod = statefulset["spec"]["template"]
    (postgres,) = pod["spec"]["containers"]
    env = _env(postgres)

    assert url.scheme == "postgresql+psycopg"
    assert (url.hostname, url.port) == (service["metadata"]["name"], 5432)
    assert url.username == env["POSTGRES_USER"]
    assert url.password == data["password"]
    assert url.path == f"/{env['POSTGRES_DB']}"
    assert env["POSTGRES_PASSWORD"] == {
        "secretKeyRef": {"name": "pdscaler-postgres", "key": "password"}
    }
    assert statefulset["spec"]["replicas"] == 1
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert selects({"matchLabels": service["spec"]["selector"]}, pod["metadata"]["labels"])
    assert service["spec"]["ports"][0]["port"] == 5432
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] in {m["name"] for m in postgres["volumeMounts"]}
    assert env["PGDATA"].startswith(
        next(
            m["mountPath"]
            for m in postgres["volumeMounts"]
            if m["name"] == claim["metadata"]["name"]
        )
        + "/"
    )


def test_only_the_in_cluster_overlay_ships_a_secret() -> None:
    for overlay in OVERLAY_NAMES:
        secrets = [r["metadata"]["name"] for r in _rendered(overlay) if r["kind"] == "Secret"]
        assert secrets == (["pdscaler-postgres"] if overlay == "postgres-in-cluster" else [])

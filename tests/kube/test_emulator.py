"""The API server emulator, driven by the real ``kubernetes`` client: what the client sends
(methods, paths, media types) and that the emulator answers it as kube-apiserver does."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes.client import (
    ApiClient,
    AppsV1Api,
    CoordinationV1Api,
    CoreV1Api,
    CustomObjectsApi,
    V1Lease,
    V1LeaseSpec,
    V1ObjectMeta,
)
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from tests.kube.emulator import ApiServerEmulator

NS = "inference"
DECODE = "llama-decode"
PREFILL = "dsv3-prefill"
LWS = ("leaderworkerset.x-k8s.io", "v1", NS, "leaderworkersets", PREFILL)
DECODE_SCALE = f"/apis/apps/v1/namespaces/{NS}/deployments/{DECODE}/scale"
PREFILL_SCALE = (
    f"/apis/leaderworkerset.x-k8s.io/v1/namespaces/{NS}/leaderworkersets/{PREFILL}/scale"
)


@pytest.fixture
def emulator() -> Iterator[ApiServerEmulator]:
    with ApiServerEmulator() as server:
        server.add_workload("apps/v1", "Deployment", NS, DECODE, 3, {"app": DECODE, "tier": "d"})
        server.add_workload("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", NS, PREFILL, 2,
                            {"leaderworkerset.sigs.k8s.io/name": PREFILL})  # fmt: skip
        yield server


@pytest.fixture
def api(emulator: ApiServerEmulator) -> ApiClient:
    return emulator.client()


def status_of(error: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(error.body)
    return body


def writes(emulator: ApiServerEmulator) -> list[tuple[str, str, str | None]]:
    return [r for r in emulator.requests if r[0] in ("PUT", "PATCH", "POST")]


# -- /scale of a built-in kind --------------------------------------------------------------


def test_a_deployment_scale_reads_as_an_autoscaling_v1_scale(api: ApiClient) -> None:
    scale = AppsV1Api(api).read_namespaced_deployment_scale(DECODE, NS)

    assert (scale.api_version, scale.kind) == ("autoscaling/v1", "Scale")
    assert (scale.metadata.name, scale.metadata.namespace) == (DECODE, NS)
    assert scale.metadata.uid
    assert scale.metadata.resource_version
    assert (scale.spec.replicas, scale.status.replicas) == (3, 3)
    assert scale.status.selector == "app=llama-decode,tier=d"  # sorted, as the server formats it


def test_replacing_the_scale_read_writes_it_and_moves_the_version(
    emulator: ApiServerEmulator, api: ApiClient
) -> None:
    apps = AppsV1Api(api)
    scale = apps.read_namespaced_deployment_scale(DECODE, NS)
    scale.spec.replicas = 5

    written = apps.replace_namespaced_deployment_scale(DECODE, NS, scale)

    assert (written.spec.replicas, written.status.replicas) == (5, 5)
    assert written.metadata.resource_version != scale.metadata.resource_version
    assert written.metadata.resource_version == emulator.resource_version(NS, "Deployment", DECODE)
    assert emulator.replicas(NS, "Deployment", DECODE) == 5
    # The generated replace_* send no Content-Type; the server then reads JSON.
    assert writes(emulator) == [("PUT", DECODE_SCALE, None)]


def test_replacing_with_the_same_replicas_keeps_the_version(
    emulator: ApiServerEmulator, api: ApiClient
) -> None:
    apps = AppsV1Api(api)
    scale = apps.read_namespaced_deployment_scale(DECODE, NS)

    written = apps.replace_namespaced_deployment_scale(DECODE, NS, scale)

    assert written.metadata.resource_version == scale.metadata.resource_version


def test_a_stale_resource_version_is_a_conflict(
    emulator: ApiServerEmulator, api: ApiClient
) -> None:
    apps = AppsV1Api(api)
    scale = apps.read_namespaced_deployment_scale(DECODE, NS)
    emulator.set_replicas(NS, "Deployment", DECODE, 7)  # another writer
    scale.spec.replicas = 5

    with pytest.raises(ApiException) as raised:
        apps.replace_namespaced_deployment_scale(DECODE, NS, scale)

    assert raised.value.status == 409
    assert status_of(raised.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'Operation cannot be fulfilled on deployments.apps "llama-decode": the object '
        "has been modified; please apply your changes to the latest version and try again",
        "reason": "Conflict",
        "details": {"name": DECODE, "group": "apps", "kind": "deployments"},
        "code": 409,
    }
    assert emulator.replicas(NS, "Deployment", DECODE) == 7


def test_negative_replicas_are_invalid(emulator: ApiServerEmulator, api: ApiClient) -> None:
    apps = AppsV1Api(api)
    scale = apps.read_namespaced_deployment_scale(DECODE, NS)
    scale.spec.replicas = -1

    with pytest.raises(ApiException) as raised:
        apps.replace_namespaced_deployment_scale(DECODE, NS, scale)

    status = status_of(raised.value)
    assert (raised.value.status, status["reason"]) == (422, "Invalid")
    assert status["message"] == (
        'Scale.autoscaling "llama-decode" is invalid: spec.replicas: Invalid value: -1: '
        "must be greater than or equal to 0"
    )
    assert [c["field"] for c in status["details"]["causes"]] == ["spec.replicas"]
    assert emulator.replicas(NS, "Deployment", DECODE) == 3


@dataclass(frozen=True)
class PatchCase:
    body: Any
    content_type: str | None  # forced with _content_type; None lets the client choose
    sent: str  # the Content-Type on the wire
    status: int  # 200, or the error code the server answers
    replicas: int  # after the call


BUILTIN_PATCHES = {
    # The client's default for a dict body on a built-in kind: rest.py turns its first choice,
    # json-patch+json, into strategic-merge-patch+json when the body is not a list.
    "dict body: strategic merge": PatchCase({"spec": {"replicas": 4}}, None,
                                            "application/strategic-merge-patch+json", 200, 4),
    "list body: JSON patch": PatchCase([{"op": "replace", "path": "/spec/replicas", "value": 6}],
                                       None, "application/json-patch+json", 200, 6),
    "merge patch when asked": PatchCase({"spec": {"replicas": 2}}, "application/merge-patch+json",
                                        "application/merge-patch+json", 200, 2),
    "a failed JSON patch test": PatchCase([{"op": "test", "path": "/spec/replicas", "value": 9}],
                                          None, "application/json-patch+json", 422, 3),
    "negative by merge patch": PatchCase({"spec": {"replicas": -2}},
                                         "application/merge-patch+json",
                                         "application/merge-patch+json", 422, 3),
    "server-side apply": PatchCase({"spec": {"replicas": 2}}, "application/apply-patch+yaml",
                                   "application/apply-patch+yaml", 415, 3),
}  # fmt: skip


@pytest.mark.parametrize("case", BUILTIN_PATCHES.values(), ids=BUILTIN_PATCHES.keys())
def test_patching_a_deployment_scale(
    emulator: ApiServerEmulator, api: ApiClient, case: PatchCase
) -> None:
    apps = AppsV1Api(api)
    try:
        apps.patch_namespaced_deployment_scale(
            DECODE, NS, case.body, _content_type=case.content_type
        )
        status = 200
    except ApiException as e:
        status = e.status

    assert writes(emulator) == [("PATCH", DECODE_SCALE, case.sent)]
    assert status == case.status
    assert emulator.replicas(NS, "Deployment", DECODE) == case.replicas


# -- /scale of a custom resource ------------------------------------------------------------


def test_a_leaderworkerset_scale_reads_as_a_scale(api: ApiClient) -> None:
    scale = CustomObjectsApi(api).get_namespaced_custom_object_scale(*LWS)

    assert (scale["apiVersion"], scale["kind"]) == ("autoscaling/v1", "Scale")
    assert scale["spec"] == {"replicas": 2}
    assert scale["status"] == {
        "replicas": 2,
        "selector": f"leaderworkerset.sigs.k8s.io/name={PREFILL}",
    }


CUSTOM_PATCHES = {
    # CustomObjectsApi chooses merge-patch+json whatever the body: its first JSON choice.
    "dict body: merge patch": PatchCase({"spec": {"replicas": 3}}, None,
                                        "application/merge-patch+json", 200, 3),
    "list body: still sent as a merge patch": PatchCase(
        [{"op": "replace", "path": "/spec/replicas", "value": 4}], None,
        "application/merge-patch+json", 400, 2),
    "JSON patch when asked": PatchCase([{"op": "replace", "path": "/spec/replicas", "value": 4}],
                                       "application/json-patch+json",
                                       "application/json-patch+json", 200, 4),
    # Custom resources have no Go types to carry strategic merge keys: the server says 415.
    "strategic merge patch": PatchCase({"spec": {"replicas": 3}},
                                       "application/strategic-merge-patch+json",
                                       "application/strategic-merge-patch+json", 415, 2),
    "not a patch type": PatchCase({"spec": {"replicas": 3}}, "application/yaml",
                                  "application/yaml", 415, 2),
}  # fmt: skip


@pytest.mark.parametrize("case", CUSTOM_PATCHES.values(), ids=CUSTOM_PATCHES.keys())
def test_patching_a_leaderworkerset_scale(
    emulator: ApiServerEmulator, api: ApiClient, case: PatchCase
) -> None:
    custom = CustomObjectsApi(api)
    try:
        custom.patch_namespaced_custom_object_scale(
            *LWS, case.body, _content_type=case.content_type
        )
        status = 200
    except ApiException as e:
        status = e.status

    assert writes(emulator) == [("PATCH", PREFILL_SCALE, case.sent)]
    assert status == case.status
    assert emulator.replicas(NS, "LeaderWorkerSet", PREFILL) == case.replicas


def test_a_strategic_merge_patch_on_a_custom_resource_names_the_accepted_types(
    api: ApiClient,
) -> None:
    with pytest.raises(ApiException) as raised:
        CustomObjectsApi(api).patch_namespaced_custom_object_scale(
            *LWS, {"spec": {"replicas": 3}}, _content_type="application/strategic-merge-patch+json"
        )

    status = status_of(raised.value)
    assert status["reason"] == "UnsupportedMediaType"
    assert status["message"] == (
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    )


def test_a_merge_patch_carrying_a_stale_version_is_a_conflict(
    emulator: ApiServerEmulator, api: ApiClient
) -> None:
    custom = CustomObjectsApi(api)
    read = custom.get_namespaced_custom_object_scale(*LWS)
    emulator.set_replicas(NS, "LeaderWorkerSet", PREFILL, 5)
    patch = {"metadata": {"resourceVersion": read["metadata"]["resourceVersion"]},
             "spec": {"replicas": 3}}  # fmt: skip

    with pytest.raises(ApiException) as raised:
        custom.patch_namespaced_custom_object_scale(*LWS, patch)

    assert raised.value.status == 409
    assert status_of(raised.value)["details"] == {
        "name": PREFILL, "group": "leaderworkerset.x-k8s.io", "kind": "leaderworkersets"
    }  # fmt: skip
    assert emulator.replicas(NS, "LeaderWorkerSet", PREFILL) == 5


# -- not found ------------------------------------------------------------------------------


def test_a_missing_object_is_not_found_with_details(api: ApiClient) -> None:
    with pytest.raises(ApiException) as raised:
        AppsV1Api(api).read_namespaced_deployment_scale("nope", NS)

    status = status_of(raised.value)
    assert (raised.value.status, status["reason"]) == (404, "NotFound")
    assert status["message"] == 'deployments.apps "nope" not found'
    assert status["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}


@pytest.mark.parametrize(
    "target",
    [
        ("example.com", "v1", NS, "gadgets", "x"),  # no such group
        ("apps", "v1", NS, "gadgets", "x"),  # no such resource in a served group
        ("coordination.k8s.io", "v1", NS, "leases", "x"),  # a kind without /scale
    ],
)
def test_an_unknown_resource_type_is_not_found(
    api: ApiClient, target: tuple[str, str, str, str, str]
) -> None:
    with pytest.raises(ApiException) as raised:
        CustomObjectsApi(api).get_namespaced_custom_object_scale(*target)

    assert raised.value.status == 404
    assert status_of(raised.value)["message"] == "the server could not find the requested resource"


# -- discovery ------------------------------------------------------------------------------

SCALABLE = {
    "Deployment": ("apps/v1", "deployments"),
    "StatefulSet": ("apps/v1", "statefulsets"),
    "LeaderWorkerSet": ("leaderworkerset.x-k8s.io/v1", "leaderworkersets"),
    "RoleBasedGroupScalingAdapter": ("workloads.x-k8s.io/v1alpha1",
                                     "rolebasedgroupscalingadapters"),
    "DynamoGraphDeploymentScalingAdapter": ("nvidia.com/v1alpha1",
                                            "dynamographdeploymentscalingadapters"),
}  # fmt: skip


@pytest.mark.parametrize(("kind", "expected"), SCALABLE.items(), ids=SCALABLE.keys())
def test_the_dynamic_client_discovers_each_kind_and_its_scale(
    api: ApiClient, tmp_path: Path, kind: str, expected: tuple[str, str]
) -> None:
    api_version, plural = expected
    dynamic = DynamicClient(api, cache_file=str(tmp_path / "discovery.json"))

    resource = dynamic.resources.get(api_version=api_version, kind=kind)

    assert (resource.name, resource.namespaced) == (plural, True)
    scale = resource.subresources["scale"]
    # A subresource's own group and version are kept apart from its parent's.
    assert (scale.kind, scale.extra_args["group"], scale.extra_args["version"]) == (
        "Scale", "autoscaling", "v1"
    )  # fmt: skip
    assert set(scale.verbs) == {"get", "patch", "update"}


def test_the_dynamic_client_reads_a_custom_scale(api: ApiClient, tmp_path: Path) -> None:
    dynamic = DynamicClient(api, cache_file=str(tmp_path / "discovery.json"))
    lws = dynamic.resources.get(api_version="leaderworkerset.x-k8s.io/v1", kind="LeaderWorkerSet")

    scale = lws.subresources["scale"].get(name=PREFILL, namespace=NS)

    assert scale.spec.replicas == 2


def test_raw_discovery_documents(api: ApiClient) -> None:
    core = CoreV1Api(api)

    api_versions = core.api_client.call_api("GET", f"{api.configuration.host}/api").read()
    groups = api.call_api("GET", f"{api.configuration.host}/apis").read()
    pods = api.call_api("GET", f"{api.configuration.host}/api/v1").read()

    assert json.loads(api_versions)["versions"] == ["v1"]
    assert {g["name"] for g in json.loads(groups)["groups"]} == {
        "apps", "leaderworkerset.x-k8s.io", "workloads.x-k8s.io", "nvidia.com",
        "coordination.k8s.io", "autoscaling", "keda.sh", "orchestration.aibrix.ai",
    }  # fmt: skip
    assert [r["name"] for r in json.loads(pods)["resources"]] == ["pods"]


# -- pods -----------------------------------------------------------------------------------


def test_pods_are_listed_by_label_selector(emulator: ApiServerEmulator, api: ApiClient) -> None:
    since = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    emulator.add_pod(NS, "d-0", {"app": DECODE, "tier": "d"}, ready=True)
    emulator.add_pod(NS, "d-1", {"app": DECODE, "tier": "d"}, ready=False)
    emulator.add_pod(NS, "d-2", {"app": DECODE, "tier": "d"}, ready=False,
                     unschedulable_since=since)  # fmt: skip
    emulator.add_pod(NS, "other-0", {"app": "other"}, ready=True)
    emulator.add_pod("elsewhere", "d-9", {"app": DECODE, "tier": "d"}, ready=True)

    pods = CoreV1Api(api).list_namespaced_pod(NS, label_selector="app=llama-decode,tier=d")

    by_name = {p.metadata.name: p for p in pods.items}
    assert sorted(by_name) == ["d-0", "d-1", "d-2"]
    conditions = {n: {c.type: c.status for c in p.status.conditions} for n, p in by_name.items()}
    assert conditions["d-0"]["Ready"] == "True"
    assert conditions["d-1"]["Ready"] == "False"
    assert conditions["d-2"] == {"PodScheduled": "False"}  # never placed: the kubelet never saw it
    unschedulable = by_name["d-2"].status
    assert unschedulable.phase == "Pending"
    assert unschedulable.conditions[0].reason == "Unschedulable"
    assert unschedulable.conditions[0].last_transition_time == since
    assert by_name["d-0"].metadata.creation_timestamp is not None


@pytest.mark.parametrize(
    ("selector", "names"),
    [
        ("app in (llama-decode,other)", ["d-0", "other-0"]),
        ("app!=other", ["d-0"]),
        ("!tier", ["other-0"]),
        ("", ["d-0", "other-0"]),
    ],
)
def test_set_based_selectors(
    emulator: ApiServerEmulator, api: ApiClient, selector: str, names: list[str]
) -> None:
    emulator.add_pod(NS, "d-0", {"app": DECODE, "tier": "d"}, ready=True)
    emulator.add_pod(NS, "other-0", {"app": "other"}, ready=True)

    pods = CoreV1Api(api).list_namespaced_pod(NS, label_selector=selector)

    assert sorted(p.metadata.name for p in pods.items) == names


def test_an_unparsable_selector_is_a_bad_request(api: ApiClient) -> None:
    with pytest.raises(ApiException) as raised:
        CoreV1Api(api).list_namespaced_pod(NS, label_selector="app=(")

    assert raised.value.status == 400


# -- faults ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        # urllib3 does not retry a PATCH, whatever the client's retry setting
        lambda api: AppsV1Api(api).patch_namespaced_deployment_scale(
            DECODE, NS, {"spec": {"replicas": 4}}
        ),
        # a read reaches the caller only with the client's retries off
        lambda api: AppsV1Api(api).read_namespaced_deployment_scale(DECODE, NS),
    ],
    ids=["patch", "read"],
)
def test_throttling_carries_retry_after_in_the_headers(
    emulator: ApiServerEmulator, call: Callable[[ApiClient], object]
) -> None:
    emulator.fail_next(429, retry_after=2)

    with pytest.raises(ApiException) as raised:
        call(emulator.client(retries=False))

    assert raised.value.status == 429
    assert raised.value.headers["Retry-After"] == "2"
    status = status_of(raised.value)
    assert (status["reason"], status["details"]) == ("TooManyRequests", {"retryAfterSeconds": 2})


def test_the_client_itself_retries_a_throttled_read(
    emulator: ApiServerEmulator, api: ApiClient
) -> None:
    # urllib3's default Retry(3) honours Retry-After on GET and PUT: the caller never sees
    # the 429, and waits for as long as the server asked (0 here, so the test does not wait).
    emulator.fail_next(429, retry_after=0)

    scale = AppsV1Api(api).read_namespaced_deployment_scale(DECODE, NS)

    assert scale.spec.replicas == 3
    assert [r[1] for r in emulator.requests].count(DECODE_SCALE) == 2


def test_the_client_itself_retries_a_read_whose_connection_dropped(
    emulator: ApiServerEmulator, api: ApiClient
) -> None:
    emulator.reset_next()

    scale = AppsV1Api(api).read_namespaced_deployment_scale(DECODE, NS)

    assert scale.spec.replicas == 3
    assert [r[1] for r in emulator.requests].count(DECODE_SCALE) == 2


def test_a_dropped_connection_fails_a_patch(emulator: ApiServerEmulator, api: ApiClient) -> None:
    emulator.reset_next()

    with pytest.raises(urllib3.exceptions.ProtocolError):
        AppsV1Api(api).patch_namespaced_deployment_scale(DECODE, NS, {"spec": {"replicas": 4}})

    assert emulator.replicas(NS, "Deployment", DECODE) == 3


def test_a_slow_answer_times_out_a_patch(emulator: ApiServerEmulator, api: ApiClient) -> None:
    emulator.delay_next(0.5)

    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        AppsV1Api(api).patch_namespaced_deployment_scale(
            DECODE, NS, {"spec": {"replicas": 4}}, _request_timeout=0.05
        )


def test_faults_pass_over_discovery(emulator: ApiServerEmulator, api: ApiClient) -> None:
    emulator.fail_next(503)

    groups = api.call_api("GET", f"{api.configuration.host}/apis/apps/v1")
    groups.read()  # releases the connection to the pool
    with pytest.raises(ApiException) as raised:
        AppsV1Api(api).patch_namespaced_deployment_scale(DECODE, NS, {"spec": {"replicas": 4}})

    assert groups.status == 200
    assert raised.value.status == 503


# -- leases ---------------------------------------------------------------------------------


def lease(name: str, holder: str) -> V1Lease:
    return V1Lease(metadata=V1ObjectMeta(name=name),
                   spec=V1LeaseSpec(holder_identity=holder, lease_duration_seconds=15))  # fmt: skip


def test_a_lease_is_created_once(api: ApiClient) -> None:
    coordination = CoordinationV1Api(api)

    created = coordination.create_namespaced_lease(NS, lease("pdscaler", "a"))
    with pytest.raises(ApiException) as raised:
        coordination.create_namespaced_lease(NS, lease("pdscaler", "b"))

    assert created.spec.holder_identity == "a"
    assert created.metadata.resource_version
    assert (raised.value.status, status_of(raised.value)["reason"]) == (409, "AlreadyExists")
    read = coordination.read_namespaced_lease("pdscaler", NS)
    assert read.spec.holder_identity == "a"


def test_a_lease_is_taken_over_only_from_the_version_read(api: ApiClient) -> None:
    coordination = CoordinationV1Api(api)
    coordination.create_namespaced_lease(NS, lease("pdscaler", "a"))
    seen_by_b = coordination.read_namespaced_lease("pdscaler", NS)
    seen_by_c = coordination.read_namespaced_lease("pdscaler", NS)
    seen_by_b.spec.holder_identity = "b"
    seen_by_c.spec.holder_identity = "c"

    taken = coordination.replace_namespaced_lease("pdscaler", NS, seen_by_b)
    with pytest.raises(ApiException) as raised:
        coordination.replace_namespaced_lease("pdscaler", NS, seen_by_c)

    assert taken.metadata.resource_version != seen_by_b.metadata.resource_version
    assert taken.metadata.uid == seen_by_b.metadata.uid
    assert raised.value.status == 409
    assert coordination.read_namespaced_lease("pdscaler", NS).spec.holder_identity == "b"


def test_a_lease_update_must_carry_a_version(api: ApiClient) -> None:
    coordination = CoordinationV1Api(api)
    coordination.create_namespaced_lease(NS, lease("pdscaler", "a"))

    with pytest.raises(ApiException) as raised:  # Leases allow no unconditional update
        coordination.replace_namespaced_lease("pdscaler", NS, lease("pdscaler", "b"))

    status = status_of(raised.value)
    assert (raised.value.status, status["reason"]) == (422, "Invalid")
    assert status["message"] == (
        'leases.coordination.k8s.io "pdscaler" is invalid: metadata.resourceVersion: '
        "Invalid value: 0x0: must be specified for an update"
    )


def test_a_lease_put_without_a_version_creates_a_missing_lease(api: ApiClient) -> None:
    coordination = CoordinationV1Api(api)

    _created, status, _headers = coordination.replace_namespaced_lease_with_http_info(
        "pdscaler", NS, lease("pdscaler", "a")
    )

    assert status == 201
    assert coordination.read_namespaced_lease("pdscaler", NS).spec.holder_identity == "a"

"""The Kubernetes actuator: replicas are read and written only through ``/scale``.

Any workload with a scale subresource works: Deployment, StatefulSet, LeaderWorkerSet,
SGLang RBG's and Dynamo's scaling adapters, any custom resource. The kind's plural
comes from API discovery (cached). A write carries the resourceVersion that was read,
so a target changed in between is a Conflict (re-read and re-decide next tick), never a
blind overwrite. Ready and pending replicas come from the pods behind the scale's
selector: a pod asked for but not ready is not capacity, and one the scheduler could not
place for a while is reported as unschedulable.

The one exception to ``/scale`` is a role inside an AIBrix StormService, whose own
``/scale`` counts whole prefill+decode units: the role's replicas are changed by a JSON
Patch that tests the role's name and the resourceVersion read.

A target that a HorizontalPodAutoscaler or a KEDA ScaledObject also drives is reported
as ``managed_by``; the engine then does not act on it.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pdscaler.actuator.transport import (
    MEDIA_JSON_PATCH,
    MEDIA_MERGE_PATCH,
    ActuationError,
    Json,
    Transport,
)
from pdscaler.domain.clock import Clock
from pdscaler.domain.errors import Conflict, NotFound, PdscalerError
from pdscaler.domain.policy import ScaleTargetRef
from pdscaler.domain.signals import ScaleState

log = logging.getLogger(__name__)

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
# Kinds whose pods a ReplicaSet removes, and so honour the pod-deletion-cost annotation.
DRAINABLE_KINDS = frozenset({("apps", "Deployment"), ("apps", "ReplicaSet")})
STORM_ROLE_LABEL = "role-name"
STORM_NAME_LABEL = "storm-service-name"
STORM_GROUP_INDEX_LABEL = "stormservice.orchestration.aibrix.ai/pod-group-index"

__all__ = ["ActuationError", "ActuatorConfig", "KubernetesActuator"]


@dataclass(frozen=True)
class ActuatorConfig:
    unschedulable_after_s: float = 120.0  # a pod unplaced for longer is reported
    owners_ttl_s: float = 30.0  # how long a namespace's HPAs and ScaledObjects are cached


class KubernetesActuator:
    def __init__(
        self, transport: Transport, clock: Clock, config: ActuatorConfig | None = None
    ) -> None:
        self._transport = transport
        self._clock = clock
        self._config = config or ActuatorConfig()
        self._plurals: dict[tuple[str, str], str] = {}
        self._owners: dict[str, tuple[datetime, list[_Owner]]] = {}
        self._lock = threading.Lock()

    # -- the Actuator protocol -------------------------------------------------------------

    def read_scale(self, namespace: str, target: ScaleTargetRef) -> ScaleState:
        if target.role is not None:
            spec_replicas, version, selector = self._read_role(namespace, target)
        else:
            scale = self._request("GET", self._scale_path(namespace, target))
            spec_replicas = int(scale.get("spec", {}).get("replicas", 0))
            version = scale.get("metadata", {}).get("resourceVersion")
            selector = scale.get("status", {}).get("selector") or ""
        managed_by = self._managed_by(namespace, target)
        if not selector:  # no selector to find pods by: trust the workload's status
            ready = int(scale.get("status", {}).get("replicas", 0))
            pending = max(spec_replicas - ready, 0)
            return ScaleState(spec_replicas, ready, pending, version, managed_by=managed_by)
        ready, pending, unschedulable = self._pods(namespace, selector)
        # Replicas asked for whose pods do not exist yet are pending too.
        pending = max(pending, spec_replicas - ready)
        return ScaleState(
            spec_replicas, ready, pending, version, selector, unschedulable, managed_by
        )

    def write_scale(
        self, namespace: str, target: ScaleTargetRef, replicas: int, resource_version: str | None
    ) -> str | None:
        if target.role is not None:
            return self._write_role(namespace, target, replicas, resource_version)
        metadata: dict[str, Any] = {"name": target.name, "namespace": namespace}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        body = {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": metadata,
            "spec": {"replicas": replicas},
        }
        scale = self._request("PUT", self._scale_path(namespace, target), body)
        written: str | None = scale.get("metadata", {}).get("resourceVersion")
        return written

    def prefer_removal(
        self, namespace: str, target: ScaleTargetRef, selector: str, load: Mapping[str, float]
    ) -> int:
        """Before a scale-down: mark each ready pod with its load as its deletion cost, so
        the ReplicaSet removes the least-loaded ones first. Pods without a known load cost
        the most (they are kept). Only Deployments and ReplicaSets honour the annotation;
        for other kinds this does nothing. Returns the number of pods patched."""
        if (_group(target.api_version), target.kind) not in DRAINABLE_KINDS:
            return 0
        pods = self._request(
            "GET", f"/api/v1/namespaces/{namespace}/pods", query=[("labelSelector", selector)]
        ).get("items", [])
        highest = math.ceil(max(load.values(), default=0)) + 1
        patched = 0
        for pod in pods:
            metadata = pod.get("metadata", {})
            if metadata.get("deletionTimestamp") or not _is_ready(pod):
                continue  # the ReplicaSet removes pods that are not ready first anyway
            name = metadata.get("name", "")
            cost = str(round(load[name]) if name in load else highest)
            if (metadata.get("annotations") or {}).get(DELETION_COST) == cost:
                continue
            patch = {"metadata": {"annotations": {DELETION_COST: cost}}}
            path = f"/api/v1/namespaces/{namespace}/pods/{name}"
            self._request("PATCH", path, patch, content_type=MEDIA_MERGE_PATCH)
            patched += 1
        return patched

    # -- StormService roles ----------------------------------------------------------------

    def _role_path(self, namespace: str, target: ScaleTargetRef) -> str:
        plural = self._plural(target.api_version, target.kind, scalable=False)
        return f"{_prefix(target.api_version)}/namespaces/{namespace}/{plural}/{target.name}"

    def _read_role(self, namespace: str, target: ScaleTargetRef) -> tuple[int, str | None, str]:
        service = self._request("GET", self._role_path(namespace, target))
        _index, role = _find_role(service, target)
        selector = f"{STORM_NAME_LABEL}={target.name},{STORM_ROLE_LABEL}={target.role}"
        if int(role.get("podGroupSize") or 1) > 1:  # a replica is a group: count its first pod
            selector += f",{STORM_GROUP_INDEX_LABEL}=0"
        version = service.get("metadata", {}).get("resourceVersion")
        return int(role.get("replicas", 0)), version, selector

    def _write_role(
        self, namespace: str, target: ScaleTargetRef, replicas: int, resource_version: str | None
    ) -> str | None:
        path = self._role_path(namespace, target)
        index, _role = _find_role(self._request("GET", path), target)
        role_path = f"/spec/template/spec/roles/{index}"
        operations: list[Json] = [{"op": "test", "path": f"{role_path}/name", "value": target.role}]
        if resource_version is not None:
            # A resourceVersion in the patched object is a precondition: 409 if it moved on.
            operations.append(
                {"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version}
            )
        # add, not replace: a role written without replicas (0) has no such member yet.
        operations.append({"op": "add", "path": f"{role_path}/replicas", "value": replicas})
        try:
            service = self._request("PATCH", path, operations, content_type=MEDIA_JSON_PATCH)
        except ActuationError as e:
            if e.status != 422:
                raise
            # The test of the role's name failed: the roles moved since they were read.
            raise Conflict(f"{e.message} (the roles of {target.name} changed)") from e
        written: str | None = service.get("metadata", {}).get("resourceVersion")
        return written

    # -- ownership -------------------------------------------------------------------------

    def _managed_by(self, namespace: str, target: ScaleTargetRef) -> str | None:
        for owner in self._owners_in(namespace):
            if owner.targets(target):
                return owner.name
        return None

    def _owners_in(self, namespace: str) -> list[_Owner]:
        now = self._clock.now()
        with self._lock:
            cached = self._owners.get(namespace)
        if cached is not None and now - cached[0] < timedelta(seconds=self._config.owners_ttl_s):
            return cached[1]
        try:
            owners = [
                *self._list_owners(namespace, "autoscaling/v2", "horizontalpodautoscalers", "HPA"),
                *self._list_owners(namespace, "keda.sh/v1alpha1", "scaledobjects", "ScaledObject"),
            ]
        except PdscalerError as e:  # not cached: asked again on the next read
            log.warning("cannot list the autoscalers in %s, so cannot tell whether they drive "
                        "its targets: %s", namespace, e)  # fmt: skip
            return cached[1] if cached is not None else []
        with self._lock:
            self._owners[namespace] = (now, owners)
        return owners

    def _list_owners(
        self, namespace: str, api_version: str, plural: str, label: str
    ) -> list[_Owner]:
        path = f"{_prefix(api_version)}/namespaces/{namespace}/{plural}"
        try:
            items = self._request("GET", path).get("items", [])
        except NotFound:  # KEDA is not installed
            return []
        owners = []
        for item in items:
            ref = item.get("spec", {}).get("scaleTargetRef") or {}
            name = f"{label} {namespace}/{item.get('metadata', {}).get('name', '')}"
            # A ScaledObject's target defaults to an apps/v1 Deployment.
            owners.append(_Owner(name, _group(ref.get("apiVersion") or "apps/v1"),
                                 ref.get("kind") or "Deployment", ref.get("name", "")))  # fmt: skip
        return owners

    # -- paths -----------------------------------------------------------------------------

    def _scale_path(self, namespace: str, target: ScaleTargetRef) -> str:
        prefix = _prefix(target.api_version)
        plural = self._plural(target.api_version, target.kind)
        return f"{prefix}/namespaces/{namespace}/{plural}/{target.name}/scale"

    def _plural(self, api_version: str, kind: str, *, scalable: bool = True) -> str:
        key = (api_version, kind)
        with self._lock:
            if key in self._plurals:
                plural = self._plurals[key]
                if not scalable or plural.endswith("/scale"):
                    return plural.removesuffix("/scale")
        resources = self._request("GET", _prefix(api_version)).get("resources", [])
        found = {r["kind"]: r["name"] for r in resources if "/" not in r.get("name", "")}
        with_scale = {
            r["name"].split("/")[0] for r in resources if r.get("name", "").endswith("/scale")
        }
        with self._lock:
            for found_kind, name in found.items():
                suffix = "/scale" if name in with_scale else ""
                self._plurals[(api_version, found_kind)] = name + suffix
        if kind not in found:
            raise NotFound(f"{api_version} has no kind {kind} (API discovery)")
        plural = str(found[kind])
        if scalable and plural not in with_scale:
            raise ActuationError(f"{kind} ({api_version}) has no scale subresource", 404)
        return plural

    # -- pods ------------------------------------------------------------------------------

    def _pods(self, namespace: str, selector: str) -> tuple[int, int, int]:
        """Ready pods; pods asked for but not ready (pending, starting, unschedulable);
        and of those, pods the scheduler has failed to place for longer than allowed."""
        pods = self._request(
            "GET", f"/api/v1/namespaces/{namespace}/pods", query=[("labelSelector", selector)]
        ).get("items", [])
        ready = pending = unschedulable = 0
        cutoff = self._clock.now() - timedelta(seconds=self._config.unschedulable_after_s)
        for pod in pods:
            if pod.get("metadata", {}).get("deletionTimestamp"):
                continue  # draining: neither capacity nor coming
            if _is_ready(pod):
                ready += 1
            elif pod.get("status", {}).get("phase") in ("Pending", "Running", None):
                pending += 1
                since = _unschedulable_since(pod)
                if since is not None and since <= cutoff:
                    unschedulable += 1
        return ready, pending, unschedulable

    def _request(
        self,
        method: str,
        path: str,
        body: object = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Json:
        return self._transport.request(method, path, body, query, content_type)


@dataclass(frozen=True)
class _Owner:
    name: str  # "HPA ns/name"
    group: str
    kind: str
    target: str

    def targets(self, ref: ScaleTargetRef) -> bool:
        return (self.group, self.kind, self.target) == (_group(ref.api_version), ref.kind, ref.name)


def _find_role(service: Json, target: ScaleTargetRef) -> tuple[int, Json]:
    roles = service.get("spec", {}).get("template", {}).get("spec", {}).get("roles") or []
    found = [
        (i, r) for i, r in enumerate(roles) if isinstance(r, dict) and r.get("name") == target.role
    ]
    if len(found) > 1:  # the CRD does not forbid it; which one is meant cannot be told
        raise ActuationError(f"{target.kind} {target.name} has {len(found)} roles named "
                             f"{target.role!r}", 422)  # fmt: skip
    if found:
        return found[0]
    names = ", ".join(str(r.get("name")) for r in roles if isinstance(r, dict)) or "none"
    raise NotFound(f"{target.kind} {target.name} has no role {target.role!r} (roles: {names})")


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def _prefix(api_version: str) -> str:
    return "/api/v1" if api_version == "v1" else f"/apis/{api_version}"


def _is_ready(pod: Json) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _unschedulable_since(pod: Json) -> datetime | None:
    for condition in pod.get("status", {}).get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            try:
                return datetime.fromisoformat(condition.get("lastTransitionTime", ""))
            except ValueError:
                return None
    return None

"""The API server emulator's data: the kinds it serves, Status errors shaped like the real
server's, discovery documents, label selectors, the three patch formats, and the checks
the server makes of a request body. No I/O and no state here.

Messages, reasons and ``details`` copy what kube-apiserver answers (apimachinery's
``errors.New*`` helpers), because clients and tests look at them.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pdscaler.domain.versioning import merge_patch

Json = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    group: str  # "" is the core group
    version: str
    kind: str
    plural: str
    builtin: bool  # compiled into kube-apiserver; custom resources are served by CRDs
    scalable: bool = True
    verbs: tuple[str, ...] = ("create", "delete", "get", "list", "patch", "update", "watch")

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``deployments.apps``: how the server names a resource in its messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


KINDS: tuple[Kind, ...] = (
    Kind("apps", "v1", "Deployment", "deployments", builtin=True),
    Kind("apps", "v1", "StatefulSet", "statefulsets", builtin=True),
    Kind("leaderworkerset.x-k8s.io", "v1", "LeaderWorkerSet", "leaderworkersets", builtin=False),
    Kind(
        "workloads.x-k8s.io",
        "v1alpha1",
        "RoleBasedGroupScalingAdapter",
        "rolebasedgroupscalingadapters",
        builtin=False,
    ),
    Kind(
        "nvidia.com",
        "v1alpha1",
        "DynamoGraphDeploymentScalingAdapter",
        "dynamographdeploymentscalingadapters",
        builtin=False,
    ),
    Kind("", "v1", "Pod", "pods", builtin=True, scalable=False),
    Kind("coordination.k8s.io", "v1", "Lease", "leases", builtin=True, scalable=False),
    Kind("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers",
         builtin=True, scalable=False),
    Kind("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects", builtin=False, scalable=False),
    # Its /scale (whole prefill+decode units) is not emulated: pdscaler patches its roles.
    Kind("orchestration.aibrix.ai", "v1alpha1", "StormService", "stormservices", builtin=False,
         scalable=False),
)  # fmt: skip
LEASE = next(k for k in KINDS if k.kind == "Lease")
POD = next(k for k in KINDS if k.kind == "Pod")

# Patch types kube-apiserver accepts (without the alpha CBOR one): strategic merge patch
# needs Go struct tags, so custom resources do not get it.
BUILTIN_PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
)
CUSTOM_PATCH_TYPES = tuple(t for t in BUILTIN_PATCH_TYPES if "strategic" not in t)


def find_kind(kind: str) -> Kind:
    found = [k for k in KINDS if k.kind == kind]
    if not found:
        raise ValueError(f"the emulator does not serve kind {kind!r}")
    return found[0]


def find_plural(group: str, version: str, plural: str) -> Kind | None:
    return next(
        (k for k in KINDS if (k.group, k.version, k.plural) == (group, version, plural)), None
    )


def find_plural_any(group: str, resource: str) -> Kind | None:
    plural = resource.split("/")[0]
    return next((k for k in KINDS if (k.group, k.plural) == (group, plural)), None)


def timestamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- errors ---------------------------------------------------------------------------------


class ApiError(Exception):
    """An answer other than success; ``status`` is the ``Status`` object sent as the body."""

    def __init__(self, code: int, reason: str, message: str, details: Json | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status: Json = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
        if details:  # omitted when empty, as Go's omitempty does
            self.status["details"] = details


def _details(kind: Kind, name: str) -> Json:
    # The server names the resource (plural) in details.kind, and omits an empty group.
    details: Json = {"name": name, "kind": kind.plural}
    if kind.group:
        details["group"] = kind.group
    return details


def not_found(kind: Kind, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{kind.qualified} "{name}" not found', _details(kind, name))


def no_such_path() -> ApiError:
    """What client-go reports for a path no handler serves (the server's own body there is a
    plain "404 page not found"; the emulator answers only JSON)."""
    return ApiError(404, "NotFound", "the server could not find the requested resource")


def conflict(kind: Kind, name: str) -> ApiError:
    message = (
        f'Operation cannot be fulfilled on {kind.qualified} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again"
    )
    return ApiError(409, "Conflict", message, _details(kind, name))


def already_exists(kind: Kind, name: str) -> ApiError:
    message = f'{kind.qualified} "{name}" already exists'
    return ApiError(409, "AlreadyExists", message, _details(kind, name))


def invalid(qualified: str, name: str, field: str, value: str, why: str) -> ApiError:
    """``qualified`` is ``Kind.group``; ``value`` as Go prints it (``-1``, ``0x0``)."""
    kind, _, group = qualified.partition(".")
    detail = f"Invalid value: {value}: {why}"
    cause = {"reason": "FieldValueInvalid", "message": detail, "field": field}
    details = {"name": name, "group": group, "kind": kind, "causes": [cause]}
    return ApiError(422, "Invalid", f'{qualified} "{name}" is invalid: {field}: {detail}', details)


def scale_invalid(name: str, replicas: int) -> ApiError:
    why = "must be greater than or equal to 0"
    return invalid("Scale.autoscaling", name, "spec.replicas", str(replicas), why)


def version_required(kind: Kind, name: str) -> ApiError:
    # Here the server puts the resource where a kind belongs: "leases.coordination.k8s.io".
    why = "must be specified for an update"
    return invalid(kind.qualified, name, "metadata.resourceVersion", "0x0", why)


def name_required(qualified_kind: str) -> ApiError:
    message = (
        f'{qualified_kind} "" is invalid: metadata.name: Required value: name or '
        "generateName is required"
    )
    cause = {
        "reason": "FieldValueRequired",
        "message": "Required value: name or generateName is required",
        "field": "metadata.name",
    }
    return ApiError(422, "Invalid", message, {"causes": [cause]})


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def unsupported_media_type(accepted: tuple[str, ...]) -> ApiError:
    message = (
        "the body of the request was in an unknown format - accepted media types include: "
        + ", ".join(accepted)
    )
    return ApiError(415, "UnsupportedMediaType", message)


def method_not_allowed() -> ApiError:
    message = "the server does not allow this method on the requested resource"
    return ApiError(405, "MethodNotAllowed", message)


# A 429 from the server's own flow control has a plain-text body; 429s from storage and
# admission are Status objects like these. The emulator answers JSON only.
_INJECTED_MESSAGES = {
    429: ("TooManyRequests", "Too many requests, please try again later."),
    500: ("InternalError", "Internal error occurred: injected by the test"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    504: ("Timeout", "the server was unable to return a response in the time allotted"),
}


def forbidden(user: str, verb: str, kind: Kind | None, resource: str, name: str | None,
              namespace: str | None) -> ApiError:  # fmt: skip
    """RBAC's denial, worded as kube-apiserver words it."""
    group = kind.group if kind else ""
    what = f"{resource.split('/')[0]}.{group}" if group else resource.split("/")[0]
    subject = f'{what} "{name}"' if name else what
    where = f' in the namespace "{namespace}"' if namespace else ""
    message = (f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
               f'in API group "{group}"{where}')  # fmt: skip
    return ApiError(403, "Forbidden", message, {"name": name or "", "group": group,
                                                 "kind": resource.split("/")[0]})  # fmt: skip


def injected(code: int, reason: str | None, retry_after_s: int | None) -> ApiError:
    default_reason, message = _INJECTED_MESSAGES.get(code, ("InternalError", "injected failure"))
    details = {} if retry_after_s is None else {"retryAfterSeconds": retry_after_s}
    return ApiError(code, reason or default_reason, message, details)


# -- discovery ------------------------------------------------------------------------------


def api_versions(server_address: str) -> Json:
    cidr = {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
    return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [cidr]}


def api_group(group: str) -> Json | None:
    versions = sorted({k.version for k in KINDS if k.group == group})
    if not group or not versions:
        return None
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": entries,
        "preferredVersion": entries[0],
    }


def api_group_list() -> Json:
    groups = sorted({k.group for k in KINDS if k.group})
    entries = [
        {key: v for key, v in (api_group(g) or {}).items() if key not in ("kind", "apiVersion")}
        for g in groups
    ]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": entries}


def api_resource_list(group: str, version: str) -> Json | None:
    kinds = [k for k in KINDS if (k.group, k.version) == (group, version)]
    if not kinds:
        return None
    resources: list[Json] = []
    for kind in kinds:
        resources.append(
            {
                "name": kind.plural,
                "singularName": kind.kind.lower(),
                "namespaced": True,
                "kind": kind.kind,
                "verbs": list(kind.verbs),
            }
        )
        if kind.scalable:
            resources.append(
                {
                    "name": f"{kind.plural}/scale",
                    "singularName": "",
                    "namespaced": True,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": ["get", "patch", "update"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": kinds[0].group_version,
        "resources": resources,
    }


# -- label selectors ------------------------------------------------------------------------

_REQUIREMENT = re.compile(
    r"^(?P<not>!)?(?P<key>[\w./-]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[\w.-]*)"
    r"|\s+(?P<set>in|notin)\s*\((?P<values>[^)]*)\))?$"
)


def parse_selector(selector: str) -> list[re.Match[str]]:
    """Equality- and set-based requirements (``a=b,c!=d,e in (f,g),!h``); 400 if unparsable."""
    parts = [p.strip() for p in re.split(r",(?![^(]*\))", selector) if p.strip()]
    requirements = [_REQUIREMENT.match(p) for p in parts]
    bad = [p for p, r in zip(parts, requirements, strict=True) if r is None]
    if bad:
        raise bad_request(f"unable to parse requirement: {bad[0]!r}")
    return [r for r in requirements if r is not None]


def selector_matches(requirements: list[re.Match[str]], labels: dict[str, str]) -> bool:
    return all(_requirement_holds(r, labels) for r in requirements)


def _requirement_holds(requirement: re.Match[str], labels: dict[str, str]) -> bool:
    key, op, value = requirement["key"], requirement["op"], requirement["value"]
    if requirement["not"]:
        return key not in labels
    if op in ("=", "=="):
        return labels.get(key) == value
    if op == "!=":
        return labels.get(key) != value
    if requirement["set"]:
        values = {v.strip() for v in requirement["values"].split(",")}
        inside = labels.get(key) in values
        return inside if requirement["set"] == "in" else not inside
    return key in labels


def format_selector(labels: dict[str, str]) -> str:
    """The form the server puts in ``Scale.status.selector``: sorted ``k=v`` pairs."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


# -- patches --------------------------------------------------------------------------------


def json_patch(target: Json, operations: Any) -> Json:
    """RFC 6902 (test, add, replace, remove). A body that is not a list of operations is a
    400; an operation that cannot apply is a 422, each as the server answers."""
    if not isinstance(operations, list) or not all(isinstance(o, dict) for o in operations):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    document = copy.deepcopy(target)
    for operation in operations:
        if not _apply_operation(document, operation):
            raise ApiError(
                422, "Invalid", "the server rejected our request due to an error in our request"
            )
    return document


def _apply_operation(document: Json, operation: Json) -> bool:
    tokens = [
        t.replace("~1", "/").replace("~0", "~")
        for t in str(operation.get("path", "")).split("/")[1:]
    ]
    if not tokens:
        return False
    parent: Any = document
    for token in tokens[:-1]:
        parent = _child(parent, token)
        if parent is None:
            return False
    last, op = tokens[-1], operation.get("op")
    if isinstance(parent, list):
        return _apply_to_list(parent, last, op, operation.get("value"))
    if not isinstance(parent, dict) or (op != "add" and last not in parent):
        return False
    if op == "test":
        return bool(parent[last] == operation.get("value"))
    if op in ("add", "replace"):
        parent[last] = operation.get("value")
        return True
    if op == "remove":
        del parent[last]
        return True
    return False


def _child(parent: Any, token: str) -> Any:
    if isinstance(parent, dict):
        return parent.get(token)
    if isinstance(parent, list) and token.isdigit() and int(token) < len(parent):
        return parent[int(token)]
    return None


def _apply_to_list(items: list[Any], token: str, op: object, value: object) -> bool:
    """An array member by index (``-`` appends, for add only), as RFC 6902 says."""
    if op == "add" and token == "-":
        items.append(value)
        return True
    if not token.isdigit() or int(token) > len(items) or (op != "add" and int(token) == len(items)):
        return False
    index = int(token)
    if op == "test":
        return bool(items[index] == value)
    if op == "add":
        items.insert(index, value)
    elif op == "replace":
        items[index] = value
    elif op == "remove":
        del items[index]
    else:
        return False
    return True


# -- request bodies -----------------------------------------------------------------------

MEDIA_JSON = "application/json"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: bytes


def field_of(body: Json, *keys: str) -> object:
    """``body[k1][k2]…``, or None where a level is missing or is not an object."""
    value: object = body
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def _json_body(request: Request) -> object:
    try:
        return json.loads(request.body)
    except ValueError as e:
        raise bad_request(f"couldn't get version/kind; json parse error: {e}") from e


def decode_body(request: Request, api_version: str, kind: str, namespace: str) -> Json:
    """The body of a PUT or POST, checked the way the server's decoder checks it."""
    # No Content-Type means the server's first media type, JSON: the client's replace_* and
    # create_* send none. The server also reads YAML and protobuf; the emulator does not.
    if media_type(request.content_type) not in ("", MEDIA_JSON):
        raise unsupported_media_type((MEDIA_JSON,))
    body = _json_body(request)
    if not isinstance(body, dict):
        raise bad_request(f"the body is not a {kind} object")
    sent = (body.get("apiVersion", api_version), body.get("kind", kind))
    if sent != (api_version, kind):
        raise bad_request(f'{sent[1]} in version "{sent[0]}" cannot be handled as a {kind}')
    if field_of(body, "metadata", "namespace") not in (None, namespace):
        raise bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    return body


def scale_replicas(scale: Json, name: str) -> int:
    """``spec.replicas`` of a Scale sent to be written: an int32, not negative."""
    replicas = field_of(scale, "spec", "replicas") or 0
    if not isinstance(replicas, int) or isinstance(replicas, bool):
        kind = type(replicas).__name__
        raise bad_request(
            f"json: cannot unmarshal {kind} into Go struct field "
            "ScaleSpec.spec.replicas of type int32"
        )
    if replicas < 0:
        raise scale_invalid(name, replicas)
    return replicas


def check_name(body: Json, name: str) -> None:
    sent = field_of(body, "metadata", "name")
    if sent not in (None, name):
        raise bad_request(
            f"the name of the object ({sent}) does not match the name on the URL ({name})"
        )


def check_patch_type(kind: Kind, content_type: str | None) -> None:
    accepted = BUILTIN_PATCH_TYPES if kind.builtin else CUSTOM_PATCH_TYPES
    media = media_type(content_type)
    if media not in accepted:
        raise unsupported_media_type(accepted)
    if media == "application/apply-patch+yaml":  # the real server accepts it
        raise ApiError(415, "UnsupportedMediaType", "server-side apply is not emulated")


def patched(request: Request, current: Json) -> Json:
    patch = _json_body(request)
    if media_type(request.content_type) == "application/json-patch+json":
        return json_patch(current, patch)
    if not isinstance(patch, dict):
        raise bad_request(
            "json: cannot unmarshal array into Go value of type map[string]interface {}"
        )
    # RFC 7386; a strategic merge patch of a Scale or of pod metadata (no lists) means the same.
    merged: Json = merge_patch(current, patch)
    return merged


def scale_object(metadata: Json, replicas: int, selector: str) -> Json:
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": copy.deepcopy(metadata),
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas, "selector": selector},
    }


def list_of(kind: str, api_version: str, version: str, items: list[Json]) -> Json:
    """A list answer; its items carry no kind or apiVersion, as the server sends them."""
    return {
        "kind": kind,
        "apiVersion": api_version,
        "metadata": {"resourceVersion": version},
        "items": items,
    }


# -- pods -----------------------------------------------------------------------------------


def pod_object(
    metadata: Json, *, ready: bool, phase: str, unschedulable_since: datetime | None
) -> Json:
    """A pod as the kubelet and scheduler leave it: a pod that cannot be placed has only the
    scheduler's ``PodScheduled=False`` condition; a placed one has the kubelet's four."""
    if unschedulable_since is not None:
        message = "0/8 nodes are available: 8 Insufficient nvidia.com/gpu."
        conditions = [
            _condition("PodScheduled", "False", unschedulable_since, "Unschedulable", message)
        ]
    else:
        since = datetime.fromisoformat(metadata["creationTimestamp"])
        readiness = "True" if ready else "False"
        reason = None if ready else "ContainersNotReady"
        conditions = [
            _condition("PodScheduled", "True", since),
            _condition("Initialized", "True", since),
            _condition("ContainersReady", readiness, since, reason),
            _condition("Ready", readiness, since, reason),
        ]
    spec = {"containers": [{"name": "engine", "image": "example.com/engine:1"}]}
    return {
        "metadata": metadata,
        "spec": spec,
        "status": {"phase": phase, "conditions": conditions},
    }


def _condition(
    kind: str, status: str, since: datetime, reason: str | None = None, message: str | None = None
) -> Json:
    condition: Json = {
        "type": kind,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": timestamp(since),
    }
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition

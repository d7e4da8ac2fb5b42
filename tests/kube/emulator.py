"""An HTTP-level emulator of kube-apiserver for what pdscaler uses, so that tests drive the
real ``kubernetes`` client over a loopback socket: discovery, ``/scale`` of workloads
(GET, PUT with optimistic concurrency, PATCH in the media types the server accepts per
kind), pods (lists by label selector, GET and PATCH by name), Leases for leader election,
and plain objects (HorizontalPodAutoscalers, KEDA ScaledObjects, AIBrix StormServices:
list, GET, PUT with optimistic concurrency, PATCH). Errors are real ``Status`` objects (see
``objects.py``). RBAC can be switched on with the rules of a ClusterRole or a Role: then
what they do not grant is a 403 as the real authorizer words it. Faults can be injected:
an error answer, a delay, or a connection dropped without an answer.

It speaks JSON only, has no watch, no controllers (status.replicas follows spec.replicas at
once) and no server-side apply.
"""

from __future__ import annotations

import copy
import json
import re
import socket
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

from kubernetes.client import ApiClient, Configuration

from pdscaler.actuator.transport import Transport, TransportConfig
from tests.kube import objects as o
from tests.kube.objects import ApiError, Json, Kind, Request

# Fault injection skips these: clients cache discovery, and a test that injects a fault
# means the call it is testing, not the look-up of a plural that comes before it.
_DISCOVERY = re.compile(r"^/(version|api|api/v1|apis|apis/[^/]+|apis/[^/]+/[^/]+)$")


@dataclass(frozen=True)
class Answer:
    code: int
    body: Json
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Workload:
    kind: Kind
    metadata: Json  # name, namespace, uid, resourceVersion, creationTimestamp
    replicas: int
    selector: str


@dataclass(frozen=True)
class _Fault:
    error: ApiError | None = None
    retry_after_s: int | None = None
    delay_s: float = 0.0
    reset: bool = False


class ApiServerEmulator:
    """``with ApiServerEmulator() as server: api = server.client()``. Thread-safe."""

    def __init__(self) -> None:
        # (method, path without the query, Content-Type or None), in arrival order
        self.requests: list[tuple[str, str, str | None]] = []
        # (namespace, name, replicas) of every change of a workload's replicas, in order
        self.scale_changes: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._version = 1000  # one counter for all objects, as etcd's revision is
        self._workloads: dict[tuple[str, str, str], _Workload] = {}  # (namespace, kind, name)
        self._pods: dict[tuple[str, str], Json] = {}
        self._leases: dict[tuple[str, str], Json] = {}
        self._objects: dict[tuple[str, str, str], Json] = {}  # (namespace, kind, name)
        self._grants: list[tuple[list[Json], str | None]] | None = None  # None: no RBAC
        self.user = "system:serviceaccount:pdscaler:pdscaler"
        self._faults: deque[_Fault] = deque()
        self._clients: list[ApiClient] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> str:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.emulator = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="api-server-emulator", daemon=True
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        for api in self._clients:
            api.close()  # type: ignore[no-untyped-call]
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> ApiServerEmulator:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def transport(self, *, retries: int = 2, qps: float = 1000.0, burst: int = 1000) -> Transport:
        """pdscaler's transport over a real client of this server, with short backoffs."""
        config = TransportConfig(request_timeout_s=2, retries=retries, max_backoff_s=0.05,
                                 qps=qps, burst=burst)  # fmt: skip
        return Transport(self.client(retries=False), config)

    def client(self, *, retries: int | bool | None = None) -> ApiClient:
        """A real client for this server, closed by ``stop()``. ``retries`` is
        ``Configuration.retries``: None keeps the library's default, urllib3's Retry(3), which
        retries GET and PUT on a dropped connection or a 429/503 carrying Retry-After (after
        sleeping that long); False hands every failure to the caller."""
        # no_proxy: the client honours HTTP(S)_PROXY from the environment, even for loopback.
        configuration = Configuration(host=self.base_url, no_proxy="127.0.0.1")
        configuration.verify_ssl = False
        configuration.retries = retries
        api = ApiClient(configuration)
        self._clients.append(api)
        return api

    # -- state ----------------------------------------------------------------------------

    def add_workload(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        replicas: int,
        selector: dict[str, str],
    ) -> None:
        found = o.find_kind(kind)
        if not found.scalable or found.group_version != api_version:
            raise ValueError(f"the emulator serves no scalable {kind} in {api_version}")
        with self._lock:
            metadata = self._new_metadata(namespace, name)
            workload = _Workload(found, metadata, replicas, o.format_selector(selector))
            self._workloads[(namespace, kind, name)] = workload

    def add_pod(
        self,
        namespace: str,
        name: str,
        labels: dict[str, str],
        *,
        ready: bool,
        phase: str | None = None,
        unschedulable_since: datetime | None = None,
    ) -> None:
        """``phase`` defaults to Running, or Pending for a pod that cannot be scheduled."""
        if ready and unschedulable_since is not None:
            raise ValueError("an unschedulable pod cannot be ready")
        phase = phase or ("Pending" if unschedulable_since else "Running")
        with self._lock:
            metadata = self._new_metadata(namespace, name) | {"labels": dict(labels)}
            self._pods[(namespace, name)] = o.pod_object(
                metadata, ready=ready, phase=phase, unschedulable_since=unschedulable_since
            )

    def add_object(
        self, api_version: str, kind: str, namespace: str, name: str, spec: Json
    ) -> None:
        """A plain object (an HPA, a ScaledObject, a StormService) with this spec."""
        found = o.find_kind(kind)
        if found.scalable or found.group_version != api_version:
            raise ValueError(f"the emulator serves no plain {kind} in {api_version}")
        with self._lock:
            metadata = self._new_metadata(namespace, name)
            self._objects[(namespace, kind, name)] = {"metadata": metadata,
                                                      "spec": copy.deepcopy(spec)}  # fmt: skip

    def object(self, namespace: str, kind: str, name: str) -> Json:
        with self._lock:
            return copy.deepcopy(self._objects[(namespace, kind, name)])

    def pod(self, namespace: str, name: str) -> Json:
        with self._lock:
            return copy.deepcopy(self._pods[(namespace, name)])

    def grant(self, rules: list[Json], namespace: str | None = None) -> None:
        """Switch RBAC on (if it is not) and bind these PolicyRules to the client's user:
        cluster-wide (a ClusterRoleBinding) or in one namespace (a RoleBinding)."""
        with self._lock:
            self._grants = [*(self._grants or []), (copy.deepcopy(rules), namespace)]

    def set_replicas(self, namespace: str, kind: str, name: str, replicas: int) -> None:
        """Another writer (a person, GitOps) changes the workload."""
        with self._lock:
            self._set(self._workload(namespace, kind, name), replicas)

    def replicas(self, namespace: str, kind: str, name: str) -> int:
        with self._lock:
            return self._workload(namespace, kind, name).replicas

    def resource_version(self, namespace: str, kind: str, name: str) -> str:
        with self._lock:
            return str(self._workload(namespace, kind, name).metadata["resourceVersion"])

    # -- faults: each applies to one coming request (discovery excepted), in order ---------

    def fail_next(
        self,
        status: int,
        body_reason: str | None = None,
        times: int = 1,
        retry_after: int | None = None,
    ) -> None:
        """Answer with a ``Status`` of this code (and a ``Retry-After`` header if given)."""
        error = o.injected(status, body_reason, retry_after)
        with self._lock:
            self._faults.extend(
                _Fault(error=error, retry_after_s=retry_after) for _ in range(times)
            )

    def delay_next(self, seconds: float) -> None:
        with self._lock:
            self._faults.append(_Fault(delay_s=seconds))

    def heal(self) -> None:
        """Drop the faults not yet served."""
        with self._lock:
            self._faults.clear()

    def reset_next(self) -> None:
        """Drop the connection without an answer."""
        with self._lock:
            self._faults.append(_Fault(reset=True))

    # -- serving --------------------------------------------------------------------------

    def handle(self, request: Request) -> Answer | None:
        """The answer to one request; None means drop the connection."""
        with self._lock:
            self.requests.append((request.method, request.path, request.content_type))
            denied = self._authorize(request)
        if denied is not None:
            return Answer(denied.code, denied.status)
        with self._lock:
            fault = None
            if self._faults and not _DISCOVERY.match(request.path):
                fault = self._faults.popleft()
        if fault is not None:
            if fault.reset:
                return None
            time.sleep(fault.delay_s)  # a slow server is the fault being emulated
            if fault.error is not None:
                after = (
                    {} if fault.retry_after_s is None else {"Retry-After": str(fault.retry_after_s)}
                )
                return Answer(fault.error.code, fault.error.status, after)
        try:
            return self._route(request)
        except ApiError as e:
            return Answer(e.code, e.status)

    def _route(self, request: Request) -> Answer:
        for pattern, serve in _ROUTES:
            matched = pattern.match(request.path)
            if matched:
                return serve(self, request, **matched.groupdict())
        raise o.no_such_path()

    def _discovery(
        self, request: Request, group: str | None = None, version: str | None = None
    ) -> Answer:
        if request.method != "GET":
            raise o.method_not_allowed()
        path = request.path
        document: Json | None
        if path == "/version":
            document = {"major": "1", "minor": "33", "gitVersion": "v1.33.0-emulated"}
        elif path == "/api":
            document = o.api_versions(self.base_url.removeprefix("http://"))
        elif path == "/apis":
            document = o.api_group_list()
        elif version is None:
            document = o.api_group(group or "")
        else:
            document = o.api_resource_list(group or "", version)
        if document is None:
            raise o.no_such_path()
        return Answer(200, document)

    def _scale(
        self, request: Request, group: str, version: str, namespace: str, plural: str, name: str
    ) -> Answer:
        kind = o.find_plural(group, version, plural)
        if kind is None or not kind.scalable:
            raise o.no_such_path()
        if request.method == "PATCH":  # the server checks the media type before the object
            o.check_patch_type(kind, request.content_type)
        elif request.method not in ("GET", "PUT"):
            raise o.method_not_allowed()
        with self._lock:
            workload = self._workloads.get((namespace, kind.kind, name))
            if workload is None:
                raise o.not_found(kind, name)
            if request.method == "GET":
                return Answer(200, _scale_of(workload))
            if request.method == "PUT":
                scale = o.decode_body(request, "autoscaling/v1", "Scale", namespace)
            else:
                scale = o.patched(request, _scale_of(workload))
            self._update_scale(workload, scale, name)
            return Answer(200, _scale_of(workload))

    def _update_scale(self, workload: _Workload, scale: Json, name: str) -> None:
        """Validation first, then the resourceVersion precondition: the server's order."""
        o.check_name(scale, name)
        replicas = o.scale_replicas(scale, name)
        wanted = o.field_of(scale, "metadata", "resourceVersion")
        if wanted and wanted != workload.metadata["resourceVersion"]:
            raise o.conflict(workload.kind, name)
        self._set(workload, replicas)

    def _pod_list(self, request: Request, namespace: str) -> Answer:
        if request.method != "GET":
            raise o.method_not_allowed()
        requirements = o.parse_selector(request.query.get("labelSelector", ""))
        with self._lock:
            items = [
                copy.deepcopy(pod)
                for (ns, _), pod in sorted(self._pods.items())
                if ns == namespace and o.selector_matches(requirements, pod["metadata"]["labels"])
            ]
            return Answer(200, o.list_of("PodList", "v1", str(self._version), items))

    def _pod(self, request: Request, namespace: str, name: str) -> Answer:
        if request.method == "PATCH":
            o.check_patch_type(o.POD, request.content_type)
        elif request.method != "GET":
            raise o.method_not_allowed()
        with self._lock:
            pod = self._pods.get((namespace, name))
            if pod is None:
                raise o.not_found(o.POD, name)
            if request.method == "PATCH":
                pod = self._store_patched(pod, o.patched(request, pod), o.POD, name)
                self._pods[(namespace, name)] = pod
            return Answer(200, {"kind": "Pod", "apiVersion": "v1"} | copy.deepcopy(pod))

    def _object(
        self,
        request: Request,
        group: str,
        version: str,
        namespace: str,
        plural: str,
        name: str | None = None,
    ) -> Answer:
        kind = o.find_plural(group, version, plural)
        if kind is None or kind.scalable or kind.kind in ("Pod", "Lease"):
            raise o.no_such_path()
        typed = {"kind": kind.kind, "apiVersion": kind.group_version}
        if request.method == "PATCH" and name is not None:
            o.check_patch_type(kind, request.content_type)
        elif request.method not in (("GET", "PUT") if name else ("GET",)):
            raise o.method_not_allowed()
        with self._lock:
            if name is None:
                items = [copy.deepcopy(obj) for (ns, k, _), obj in sorted(self._objects.items())
                         if (ns, k) == (namespace, kind.kind)]  # fmt: skip
                return Answer(200, o.list_of(f"{kind.kind}List", kind.group_version,
                                             str(self._version), items))  # fmt: skip
            stored = self._objects.get((namespace, kind.kind, name))
            if stored is None:
                raise o.not_found(kind, name)
            if request.method == "GET":
                return Answer(200, typed | copy.deepcopy(stored))
            if request.method == "PUT":
                sent = o.decode_body(request, kind.group_version, kind.kind, namespace)
                o.check_name(sent, name)
                wanted = o.field_of(sent, "metadata", "resourceVersion")
                if wanted and wanted != stored["metadata"]["resourceVersion"]:
                    raise o.conflict(kind, name)
                changed = {"metadata": stored["metadata"], "spec": sent.get("spec") or {}}
            else:
                changed = o.patched(request, typed | stored)
            stored = self._store_patched(stored, changed, kind, name)
            self._objects[(namespace, kind.kind, name)] = stored
            return Answer(200, typed | copy.deepcopy(stored))

    def _store_patched(self, stored: Json, changed: Json, kind: o.Kind, name: str) -> Json:
        """The server's update after a patch: a resourceVersion the patch set is a
        precondition; identity fields stay; a change gets a new version, a no-op none."""
        changed = {k: v for k, v in changed.items() if k not in ("kind", "apiVersion")}
        wanted = o.field_of(changed, "metadata", "resourceVersion")
        if wanted != stored["metadata"]["resourceVersion"]:
            raise o.conflict(kind, name)
        metadata = {**(changed.get("metadata") or {}),
                    **{k: stored["metadata"][k] for k in ("name", "namespace", "uid",
                                                          "creationTimestamp")}}  # fmt: skip
        changed["metadata"] = metadata
        if changed == stored:
            return stored
        self._version += 1
        metadata["resourceVersion"] = str(self._version)
        return changed

    def _authorize(self, request: Request) -> o.ApiError | None:
        """RBAC, when switched on: the request's verb on its resource must be granted."""
        if self._grants is None:
            return None
        attributes = _attributes(request)
        if attributes is None:  # discovery: every authenticated user may read it
            return None
        verb, group, resource, name, namespace = attributes
        for rules, bound_namespace in self._grants:
            if bound_namespace is not None and bound_namespace != namespace:
                continue
            for rule in rules:
                if _allows(rule, verb, group, resource, name):
                    return None
        return o.forbidden(self.user, verb, o.find_plural_any(group, resource), resource, name,
                           namespace)  # fmt: skip

    def _lease(self, request: Request, namespace: str, name: str | None = None) -> Answer:
        allowed = ("GET", "PUT") if name else ("GET", "POST")
        if request.method not in allowed:
            raise o.method_not_allowed()
        with self._lock:
            if request.method == "GET":
                return self._read_leases(namespace, name)
            lease = o.decode_body(request, "coordination.k8s.io/v1", "Lease", namespace)
            if name is not None:
                o.check_name(lease, name)
            return self._write_lease(namespace, lease, create=request.method == "POST")

    def _read_leases(self, namespace: str, name: str | None) -> Answer:
        if name is None:
            items = [
                copy.deepcopy(lease)
                for (ns, _), lease in sorted(self._leases.items())
                if ns == namespace
            ]
            list_type = ("LeaseList", "coordination.k8s.io/v1", str(self._version))
            return Answer(200, o.list_of(*list_type, items))
        lease = self._leases.get((namespace, name))
        if lease is None:
            raise o.not_found(o.LEASE, name)
        return Answer(200, _typed_lease(lease))

    def _write_lease(self, namespace: str, lease: Json, *, create: bool) -> Answer:
        """POST creates; PUT updates with a resourceVersion (Leases allow no unconditional
        update) or, given none, creates (Leases allow create on update)."""
        name = o.field_of(lease, "metadata", "name")
        if not name or not isinstance(name, str):
            raise o.name_required("Lease.coordination.k8s.io")
        existing = self._leases.get((namespace, name))
        wanted = o.field_of(lease, "metadata", "resourceVersion")
        if existing is None and (create or not wanted):
            return Answer(201, self._store_lease(namespace, name, lease))
        if existing is None:
            raise o.not_found(o.LEASE, name)
        if create:
            raise o.already_exists(o.LEASE, name)
        if not wanted:
            raise o.version_required(o.LEASE, name)  # Leases allow no unconditional update
        if wanted != existing["metadata"]["resourceVersion"]:
            raise o.conflict(o.LEASE, name)
        if (o.field_of(lease, "spec") or {}) == existing["spec"]:  # a no-op write keeps its version
            return Answer(200, _typed_lease(existing))
        return Answer(200, self._store_lease(namespace, name, lease, existing["metadata"]))

    def _store_lease(
        self, namespace: str, name: str, lease: Json, previous: Json | None = None
    ) -> Json:
        metadata = self._new_metadata(namespace, name)
        if previous is not None:  # identity and age survive an update
            metadata |= {k: previous[k] for k in ("uid", "creationTimestamp")}
        stored = {"metadata": metadata, "spec": copy.deepcopy(o.field_of(lease, "spec") or {})}
        self._leases[(namespace, name)] = stored  # as list items are: without kind
        return _typed_lease(stored)

    # -- helpers (called with the lock held) ----------------------------------------------

    def _new_metadata(self, namespace: str, name: str) -> Json:
        self._version += 1
        return {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "resourceVersion": str(self._version),
            "creationTimestamp": o.timestamp(datetime.now(UTC)),
        }

    def _workload(self, namespace: str, kind: str, name: str) -> _Workload:
        found = self._workloads.get((namespace, kind, name))
        if found is None:
            raise KeyError(f"no {kind} {namespace}/{name} in the emulator")
        return found

    def _set(self, workload: _Workload, replicas: int) -> None:
        if replicas == workload.replicas:
            return  # the server stores nothing for a no-op update: the version stays
        self._version += 1
        workload.metadata["resourceVersion"] = str(self._version)
        workload.replicas = replicas
        self.scale_changes.append(
            (workload.metadata["namespace"], workload.metadata["name"], replicas)
        )


def _scale_of(workload: _Workload) -> Json:
    return o.scale_object(workload.metadata, workload.replicas, workload.selector)


_RESOURCE_PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)/namespaces/(?P<namespace>[^/]+)/"
    r"(?P<resource>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$"
)
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def _attributes(request: Request) -> tuple[str, str, str, str | None, str] | None:
    """(verb, API group, resource[/subresource], name, namespace), as the authorizer sees a
    request; None for a non-resource path."""
    matched = _RESOURCE_PATH.match(request.path)
    if matched is None:
        return None
    name, sub = matched["name"], matched["sub"]
    resource = f"{matched['resource']}/{sub}" if sub else matched["resource"]
    if request.method == "GET":
        verb = "get" if name else ("watch" if request.query.get("watch") else "list")
    else:
        verb = _VERBS.get(request.method, request.method.lower())
    return verb, matched["group"] or "", resource, name, matched["namespace"]


def _allows(rule: Json, verb: str, group: str, resource: str, name: str | None) -> bool:
    def has(key: str, value: str) -> bool:
        values = rule.get(key) or []
        return "*" in values or value in values

    names = rule.get("resourceNames") or []
    if names and (name is None or name not in names):
        return False
    return has("verbs", verb) and has("apiGroups", group) and has("resources", resource)


def _typed_lease(lease: Json) -> Json:
    return {"kind": "Lease", "apiVersion": "coordination.k8s.io/v1"} | copy.deepcopy(lease)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # kept-alive client connections must not hold up stop()
    emulator: ApiServerEmulator


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    # Headers and body go out in two writes: with Nagle's algorithm the body waits for the
    # client's delayed ACK of the headers, some 40 ms on every request.
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        request = Request(
            self.command, url.path, query, self.headers.get("Content-Type"), self.rfile.read(length)
        )
        answer = self.server.emulator.handle(request)
        if answer is None:
            # Linger 0: closing sends a reset, so the client gets no answer at all.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        payload = json.dumps(answer.body).encode()
        self.send_response(answer.code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for header, value in answer.headers.items():
            self.send_header(header, value)
        self.end_headers()
        self.wfile.write(payload)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET  # noqa: N815 (http.server names)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the test records requests in ApiServerEmulator.requests instead


_Serve = Callable[..., Answer]
_ROUTES: tuple[tuple[re.Pattern[str], _Serve], ...] = tuple(
    (re.compile(pattern), serve)
    for pattern, serve in (
        (r"^/(?:version|api|apis)$", ApiServerEmulator._discovery),
        (r"^/api/(?P<version>v1)$", ApiServerEmulator._discovery),
        (r"^/apis/(?P<group>[^/]+)(?:/(?P<version>[^/]+))?$", ApiServerEmulator._discovery),
        (r"^/api/v1/namespaces/(?P<namespace>[^/]+)/pods$", ApiServerEmulator._pod_list),
        (r"^/api/v1/namespaces/(?P<namespace>[^/]+)/pods/(?P<name>[^/]+)$", ApiServerEmulator._pod),
        (
            r"^/apis/coordination\.k8s\.io/v1/namespaces/(?P<namespace>[^/]+)/leases"
            r"(?:/(?P<name>[^/]+))?$",
            ApiServerEmulator._lease,
        ),
        (
            r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<namespace>[^/]+)/"
            r"(?P<plural>[^/]+)/(?P<name>[^/]+)/scale$",
            ApiServerEmulator._scale,
        ),
        (
            r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<namespace>[^/]+)/"
            r"(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?$",
            ApiServerEmulator._object,
        ),
    )
)

"""The Kubernetes actuator: replicas are read and written only through ``/scale``.

Any workload with a scale subresource works: Deployment, StatefulSet, LeaderWorkerSet,
SGLang RBG's and Dynamo's scaling adapters, any custom resource. The kind's plural
comes from API discovery (cached). A write carries the resourceVersion that was read,
so a target changed in between is a Conflict (re-read and re-decide next tick), never a
blind overwrite. Ready and pending replicas come from the pods behind the scale's
selector: a pod asked for but not ready is not capacity.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes.client import ApiClient

from pdscaler.domain.errors import Conflict, Forbidden, NotFound, PdscalerError, Unavailable
from pdscaler.domain.policy import ScaleTargetRef
from pdscaler.domain.signals import ScaleState

log = logging.getLogger(__name__)


class ActuationError(PdscalerError):
    """The API server refused a request for a reason other than the common ones."""

    code = "ActuationError"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ActuatorConfig:
    request_timeout_s: float = 10.0
    retries: int = 2  # for 429 and 5xx, with backoff (Retry-After honoured up to a cap)
    max_backoff_s: float = 2.0


class KubernetesActuator:
    def __init__(self, api: ApiClient, config: ActuatorConfig | None = None) -> None:
        self._api = api
        self._config = config or ActuatorConfig()
        self._plurals: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def read_scale(self, namespace: str, target: ScaleTargetRef) -> ScaleState:
        scale = self._request("GET", self._scale_path(namespace, target))
        spec_replicas = int(scale.get("spec", {}).get("replicas", 0))
        status = scale.get("status", {})
        selector = status.get("selector") or None
        version = scale.get("metadata", {}).get("resourceVersion")
        if selector is None:  # no selector to find pods by: trust the workload's status
            ready = int(status.get("replicas", 0))
            return ScaleState(spec_replicas, ready, max(spec_replicas - ready, 0), version)
        ready, pending = self._pods(namespace, selector)
        # Replicas asked for whose pods do not exist yet are pending too.
        pending = max(pending, spec_replicas - ready)
        return ScaleState(spec_replicas, ready, pending, version, selector)

    def write_scale(
        self, namespace: str, target: ScaleTargetRef, replicas: int, resource_version: str | None
    ) -> str | None:
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

    # -- paths -----------------------------------------------------------------------------

    def _scale_path(self, namespace: str, target: ScaleTargetRef) -> str:
        prefix = _prefix(target.api_version)
        plural = self._plural(target.api_version, target.kind)
        return f"{prefix}/namespaces/{namespace}/{plural}/{target.name}/scale"

    def _plural(self, api_version: str, kind: str) -> str:
        key = (api_version, kind)
        with self._lock:
            if key in self._plurals:
                return self._plurals[key]
        resources = self._request("GET", _prefix(api_version)).get("resources", [])
        found = {r["kind"]: r["name"] for r in resources if "/" not in r.get("name", "")}
        scalable = {
            r["name"].split("/")[0] for r in resources if r.get("name", "").endswith("/scale")
        }
        with self._lock:
            for found_kind, name in found.items():
                if name in scalable:  # only kinds /scale can be asked of are remembered
                    self._plurals[(api_version, found_kind)] = name
        if kind not in found:
            raise NotFound(f"{api_version} has no kind {kind} (API discovery)")
        plural = str(found[kind])
        if plural not in scalable:
            raise ActuationError(f"{kind} ({api_version}) has no scale subresource", 404)
        return plural

    # -- pods ------------------------------------------------------------------------------

    def _pods(self, namespace: str, selector: str) -> tuple[int, int]:
        """Ready pods, and pods asked for but not ready (pending, starting, unschedulable)."""
        pods = self._request(
            "GET", f"/api/v1/namespaces/{namespace}/pods", query=[("labelSelector", selector)]
        ).get("items", [])
        ready = pending = 0
        for pod in pods:
            if pod.get("metadata", {}).get("deletionTimestamp"):
                continue  # draining: neither capacity nor coming
            if _is_ready(pod):
                ready += 1
            elif pod.get("status", {}).get("phase") in ("Pending", "Running", None):
                pending += 1
        return ready, pending

    # -- transport -------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: list[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        """One call, retried with backoff on 429 and 5xx; errors become pdscaler's own."""
        attempt = 0
        while True:
            try:
                return self._once(method, path, body, query)
            except _Retryable as e:
                if attempt >= self._config.retries:
                    raise e.error from None
                attempt += 1
                pause = min(e.retry_after_s or 0.1 * 2**attempt, self._config.max_backoff_s)
                log.info("%s %s: %s; retrying in %.1f s", method, path, e.error, pause)
                time.sleep(pause)

    def _once(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        query: list[tuple[str, str]] | None,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        _m, url, header_params, serialized, _post = self._api.param_serialize(
            method=method, resource_path=path, query_params=query or [], header_params=headers,
            body=body, auth_settings=["BearerToken"],
        )  # fmt: skip
        try:
            response = self._api.call_api(
                method, url, header_params=header_params, body=serialized,
                _request_timeout=self._config.request_timeout_s,
            )  # fmt: skip
            raw = response.read()
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise _Retryable(Unavailable(f"{method} {path}: {_short(e)}"), None) from e
        data = _json(raw)
        if response.status < 400:
            return data
        raise _error(method, path, response.status, data, response.headers)


class _Retryable(Exception):
    def __init__(self, error: PdscalerError, retry_after_s: float | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after_s = retry_after_s


def _error(
    method: str, path: str, status: int, data: dict[str, Any], headers: Any
) -> PdscalerError | _Retryable:
    reason = data.get("reason") or ""
    message = f"{method} {path}: HTTP {status} {reason}: {data.get('message', '')}".strip()
    if status == 404:
        return NotFound(message)
    if status in (401, 403):
        return Forbidden(message)
    if status == 409:
        return Conflict(message)
    if status == 429 or status >= 500:
        retry_after = headers.get("Retry-After") if headers is not None else None
        seconds = float(retry_after) if retry_after and retry_after.isdigit() else None
        return _Retryable(Unavailable(message), seconds)
    return ActuationError(message, status)


def _prefix(api_version: str) -> str:
    return "/api/v1" if api_version == "v1" else f"/apis/{api_version}"


def _is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _json(raw: bytes | None) -> dict[str, Any]:
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {"message": (raw or b"")[:200].decode(errors="replace")}
    return data if isinstance(data, dict) else {}


def _short(error: Exception) -> str:
    return " ".join(str(error).split())[:300]

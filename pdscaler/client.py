"""A small client of pdscaler's own REST API, used by the CLI."""

from __future__ import annotations

from typing import Any

import httpx

from pdscaler.domain.errors import PdscalerError, Unavailable
from pdscaler.domain.policy import Policy


class ApiError(PdscalerError):
    """The API answered with an error status."""

    code = "ApiError"

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        errors = "; ".join(f"{e['field']}: {e['message']}" for e in body.get("errors", []))
        detail = f" ({errors})" if errors else ""
        super().__init__(f"HTTP {status}: {body.get('message', '')}{detail}")
        self.status = status
        self.body = body


class PdscalerClient:
    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 10.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s)
        self._base_url = base_url

    def close(self) -> None:
        self._http.close()

    def apply(self, policy: Policy, comment: str = "") -> str:
        """Create the policy, or replace it if it differs; returns what happened."""
        namespace, name = policy.key
        document = policy.document()
        current = self._send("GET", f"/v1/policies/{namespace}/{name}")
        if current.status_code == 404:
            self._check(
                self._send("POST", "/v1/policies", json=document, params={"comment": comment})
            )
            return "created"
        body = self._check(current)
        if {k: body[k] for k in ("apiVersion", "kind", "spec")} == {
            k: document[k] for k in ("apiVersion", "kind", "spec")
        } and _same_meta(body["metadata"], document["metadata"]):
            return "unchanged"
        self._check(
            self._send(
                "PUT",
                f"/v1/policies/{namespace}/{name}",
                json=document,
                params={"comment": comment},
                headers={"If-Match": current.headers["ETag"]},
            )
        )
        return "updated"

    def explain(self, namespace: str, name: str) -> dict[str, Any]:
        return self._check(self._send("GET", f"/v1/policies/{namespace}/{name}/explain"))

    def decisions(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._check(self._send("GET", "/v1/decisions", params=params))

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, url, **kwargs)
        except httpx.TransportError as e:
            raise Unavailable(f"cannot reach the pdscaler API at {self._base_url}: {e}") from e

    @staticmethod
    def _check(response: httpx.Response) -> dict[str, Any]:
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {"message": response.text[:200]}
        if response.status_code >= 400:
            raise ApiError(response.status_code, body)
        return body


def _same_meta(served: dict[str, Any], given: dict[str, Any]) -> bool:
    return all(served.get(k, {}) == given.get(k, {}) for k in ("labels", "annotations"))

"""A small client of pdscaler's own REST API, used by the CLI."""

from __future__ import annotations

from typing import Any

import httpx

from pdscaler.domain.policy import Policy


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        errors = "; ".join(f"{e['field']}: {e['message']}" for e in body.get("errors", []))
        super().__init__(
            f"HTTP {status}: {body.get('message', '')}" + (f" ({errors})" if errors else "")
        )
        self.status = status
        self.body = body


class PdscalerClient:
    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 10.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def apply(self, policy: Policy, comment: str = "") -> str:
        """Create the policy, or replace it if it differs; returns what happened."""
        namespace, name = policy.key
        document = policy.document()
        current = self._http.get(f"/v1/policies/{namespace}/{name}")
        if current.status_code == 404:
            self._check(self._http.post("/v1/policies", json=document, params={"comment": comment}))
            return "created"
        body = self._check(current)
        if {k: body[k] for k in ("apiVersion", "kind", "spec")} == {
            k: document[k] for k in ("apiVersion", "kind", "spec")
        } and _same_meta(body["metadata"], document["metadata"]):
            return "unchanged"
        self._check(
            self._http.put(
                f"/v1/policies/{namespace}/{name}",
                json=document,
                params={"comment": comment},
                headers={"If-Match": current.headers["ETag"]},
            )
        )
        return "updated"

    def decisions(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._check(self._http.get("/v1/decisions", params=params))

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

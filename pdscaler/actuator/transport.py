"""One call to the Kubernetes API server: the real client's connection, pdscaler's errors.

Every call has a timeout, waits for the client-side rate limit (QPS with a burst, as
client-go's token bucket), and is retried with a capped backoff on 429, 5xx and dropped
connections. Answers become dicts; errors become pdscaler's own, with the HTTP status kept.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes.client import ApiClient

from pdscaler.domain.errors import Conflict, Forbidden, NotFound, PdscalerError, Unavailable

log = logging.getLogger(__name__)

Json = dict[str, Any]

MEDIA_JSON = "application/json"
MEDIA_JSON_PATCH = "application/json-patch+json"
MEDIA_MERGE_PATCH = "application/merge-patch+json"


class ActuationError(PdscalerError):
    """The API server refused a request for a reason other than the common ones."""

    code = "ActuationError"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TransportConfig:
    request_timeout_s: float = 10.0
    retries: int = 2  # for 429 and 5xx, with backoff (Retry-After honoured up to a cap)
    max_backoff_s: float = 2.0
    qps: float = 50.0  # client-side rate limit, as client-go's --kube-api-qps
    burst: int = 100


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up. Thread-safe."""

    def __init__(
        self,
        rate: float,
        burst: int,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._rate, self._burst = rate, max(burst, 1)
        self._monotonic, self._sleep = monotonic, sleep
        self._tokens = float(self._burst)
        self._at = monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Take one token, waiting for it if need be; returns the time waited."""
        with self._lock:
            now = self._monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
            self._at = now
            self._tokens -= 1
            wait = -self._tokens / self._rate if self._tokens < 0 else 0.0
        if wait:
            self._sleep(wait)
        return wait


class Transport:
    def __init__(self, api: ApiClient, config: TransportConfig | None = None) -> None:
        self._api = api
        self.config = config or TransportConfig()
        self._bucket = TokenBucket(self.config.qps, self.config.burst)

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = MEDIA_JSON,
    ) -> Json:
        """One call, retried with backoff on 429, 5xx and lost connections."""
        attempt = 0
        while True:
            try:
                return self._once(method, path, body, query, content_type)
            except _Retryable as e:
                if attempt >= self.config.retries:
                    raise e.error from None
                attempt += 1
                pause = min(e.retry_after_s or 0.1 * 2**attempt, self.config.max_backoff_s)
                log.info("%s %s: %s; retrying in %.1f s", method, path, e.error, pause)
                time.sleep(pause)

    def _once(
        self,
        method: str,
        path: str,
        body: object,
        query: list[tuple[str, str]] | None,
        content_type: str,
    ) -> Json:
        self._bucket.take()
        # The content type is always set here: the client's own default differs between
        # its built-in and custom-resource APIs, and a patch needs an explicit one.
        headers = {"Accept": MEDIA_JSON, "Content-Type": content_type}
        _m, url, header_params, serialized, _post = self._api.param_serialize(
            method=method, resource_path=path, query_params=query or [], header_params=headers,
            body=body, auth_settings=["BearerToken"],
        )  # fmt: skip
        try:
            response = self._api.call_api(
                method, url, header_params=header_params, body=serialized,
                _request_timeout=self.config.request_timeout_s,
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
    method: str, path: str, status: int, data: Json, headers: Any
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


def _json(raw: bytes | None) -> Json:
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {"message": (raw or b"")[:200].decode(errors="replace")}
    return data if isinstance(data, dict) else {}


def _short(error: Exception) -> str:
    return " ".join(str(error).split())[:300]

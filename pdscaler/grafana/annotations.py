"""Scale changes pushed to Grafana as annotations, off the control loop's path.

:func:`scale_annotation` turns an applied decision into an :class:`Annotation` (pure).
:class:`AnnotationPoster` sends annotations to Grafana's HTTP API
(``POST /api/annotations``) from one background thread. The loop only ever calls
:meth:`AnnotationPoster.submit`, which never blocks and never raises: a bounded queue sits
between the two, and what does not fit is dropped and counted. A failed post is retried
with a capped exponential backoff on lost connections, timeouts, 429 and 5xx; any other
refusal is final. The token is sent in a header and never logged.
"""

from __future__ import annotations

import html
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from pdscaler.domain.decision import Action, DecisionRecord, DecisionStatus
from pdscaler.domain.errors import InvalidInput

log = logging.getLogger(__name__)

ANNOTATIONS_PATH = "/api/annotations"
TAG = "pdscaler"
# The reason's message is the longest part of the text; Grafana shows it in a tooltip.
MAX_MESSAGE_CHARS = 200


@dataclass(frozen=True)
class Annotation:
    """One point annotation. Without ``dashboard_uid`` it belongs to the organization.

    ``text`` is HTML, as Grafana renders it; ``at`` must be timezone-aware.
    """

    at: datetime
    tags: tuple[str, ...]
    text: str
    dashboard_uid: str | None = None

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise InvalidInput("naive datetime: pass timezone-aware UTC times")

    def body(self) -> dict[str, Any]:
        """The JSON body of Grafana's ``POST /api/annotations``."""
        body: dict[str, Any] = {
            "time": _epoch_ms(self.at),
            "tags": list(self.tags),
            "text": self.text,
        }
        if self.dashboard_uid is not None:
            body["dashboardUID"] = self.dashboard_uid
        return body


def is_applied_change(record: DecisionRecord) -> bool:
    """Whether a decision is one that :func:`scale_annotation` is meant for."""
    return record.status == DecisionStatus.APPLIED and record.action != Action.NONE


def scale_annotation(
    record: DecisionRecord, decision_id: int, *, dashboard_uid: str | None, api_url: str | None
) -> Annotation:
    """The annotation of one scale change, at the time it was decided.

    Tags: ``pdscaler``, the policy as ``namespace/name``, the role and the action
    (``scale_up`` or ``scale_down``). The text reads
    ``inference/llama prefill: 2 -> 4 (ScaleUpLimit: at most 2 pods per 15s)`` and then a
    link to the decision in pdscaler's API at ``api_url`` (its public URL), or the
    decision's path when ``api_url`` is None. Every part taken from the record is
    HTML-escaped.
    """
    policy = f"{record.policy_namespace}/{record.policy_name}"
    summary = (
        f"{policy} {record.role.value}: "
        f"{_replicas(record.current_replicas)} -> {_replicas(record.desired_replicas)}"
    )
    if record.steps:
        last = record.steps[-1]
        message = _shorten(last.message)
        summary += f" ({last.reason}: {message})" if message else f" ({last.reason})"
    path = f"/v1/decisions/{decision_id}"
    if api_url:
        href = html.escape(api_url.rstrip("/") + path, quote=True)
        link = f'<a href="{href}">decision {decision_id}</a>'
    else:
        link = f"decision {decision_id} ({path})"
    return Annotation(
        at=record.decided_at,
        tags=(TAG, policy, record.role.value, record.action.value),
        text=f"{html.escape(summary, quote=False)} · {link}",
        dashboard_uid=dashboard_uid,
    )


@dataclass(frozen=True)
class _Outcome:
    posted: bool
    retryable: bool = False
    error: str = ""
    retry_after_s: float | None = None


class AnnotationPoster:
    """Posts annotations to Grafana from a daemon thread; :meth:`submit` never waits.

    ``url`` is Grafana's root URL, a sub-path included; ``token`` a service-account token
    allowed to create annotations. A post is tried ``1 + retries`` times: after a lost
    connection, a timeout, 429 or 5xx it waits ``backoff_s``, then twice that, and so on
    up to ``max_backoff_s`` (a ``Retry-After`` in seconds replaces the backoff, capped the
    same). ``sleep`` replaces those waits (tests); by default a wait ends early when
    :meth:`stop` gives up.

    The counters ``posted``, ``failed`` (refused, or out of retries) and ``dropped`` (did
    not fit in the queue, or left in it at stop) only grow; ``pending`` is the queue's
    length. Safe to call from any thread.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        queue_size: int = 1000,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        timeout_s: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise InvalidInput("the Grafana URL must start with http:// or https://")
        if not token:
            raise InvalidInput("posting annotations needs a Grafana API token")
        if queue_size < 1 or retries < 0 or backoff_s < 0 or max_backoff_s < 0:
            raise InvalidInput("queue_size must be positive; retries and backoffs not negative")
        if timeout_s <= 0:
            raise InvalidInput("timeout_s must be positive")
        self._endpoint = url.rstrip("/") + ANNOTATIONS_PATH
        self._token = token
        self._retries = retries
        self._backoff_s, self._max_backoff_s = backoff_s, max_backoff_s
        self._timeout_s = timeout_s
        self._transport = transport
        self._sleep = sleep
        self._queue_size = queue_size
        self._queue: deque[Annotation] = deque()
        self._closing = threading.Event()  # drain the queue, then end
        self._abandon = threading.Event()  # end now: no more posts or retries
        self._lock = threading.Lock()  # the queue, the counters, start and stop
        self._queued = threading.Condition(self._lock)  # wakes the worker
        self._thread: threading.Thread | None = None
        self.posted = 0
        self.failed = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Annotations waiting in the queue (not the one being posted)."""
        return len(self._queue)

    def start(self) -> None:
        """Start the worker thread; a second call does nothing. Not after :meth:`stop`."""
        with self._lock:
            if self._closing.is_set():
                raise RuntimeError("an annotation poster cannot be restarted")
            if self._thread is not None:
                return
            client = httpx.Client(
                headers={"Authorization": f"Bearer {self._token}", "Accept": "application/json"},
                timeout=self._timeout_s,
                transport=self._transport,
            )
            self._thread = threading.Thread(
                target=self._run, args=(client,), name="grafana-annotations", daemon=True
            )
            self._thread.start()

    def submit(self, annotation: Annotation) -> bool:
        """Queue one annotation; False (and counted as dropped) when it does not fit.

        Never blocks and never raises. After :meth:`stop`, everything is dropped.
        """
        # Nothing holds the lock for more than a few instructions.
        with self._queued:
            if not self._closing.is_set() and len(self._queue) < self._queue_size:
                self._queue.append(annotation)
                self._queued.notify()
                return True
            self.dropped += 1
            dropped = self.dropped
        # 1, 10, 100, ...: a full queue stays visible in the log without flooding it.
        if str(dropped).strip("0") == "1":
            log.warning("Grafana annotations: %d dropped so far (queue full or stopped)", dropped)
        return False

    def stop(self, timeout_s: float = 5.0) -> None:
        """Post what is queued for at most ``timeout_s``, then drop the rest and return.

        A post under way when time runs out is left to its own timeout on the daemon
        thread; this call does not wait for it.
        """
        with self._queued:
            self._closing.set()
            self._queued.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        with self._queued:
            self._abandon.set()
            left = len(self._queue)
            self._queue.clear()
            self.dropped += left
            self._queued.notify_all()
        if left:
            log.warning("Grafana annotations: %d left unposted at stop", left)

    # --- the worker thread ------------------------------------------------------------

    def _run(self, client: httpx.Client) -> None:
        try:
            while (annotation := self._next()) is not None:
                try:
                    self._deliver(client, annotation)
                except Exception:
                    # A bug here must not end the thread: later annotations still go out.
                    self._count_failed()
                    log.exception("Grafana annotation not posted: unexpected error")
        finally:
            client.close()

    def _next(self) -> Annotation | None:
        """The oldest queued annotation; None once stopping and drained, or abandoned."""
        with self._queued:
            while not self._queue and not self._closing.is_set():
                self._queued.wait()
            if self._abandon.is_set() or not self._queue:
                return None
            return self._queue.popleft()

    def _deliver(self, client: httpx.Client, annotation: Annotation) -> None:
        body = annotation.body()
        attempts = 0
        while True:
            outcome = self._send(client, body)
            attempts += 1
            if outcome.posted:
                with self._lock:
                    self.posted += 1
                return
            if not outcome.retryable or attempts > self._retries:
                break
            pause = outcome.retry_after_s
            if pause is None:
                pause = self._backoff_s * 2 ** (attempts - 1)
            pause = min(pause, self._max_backoff_s)
            log.info("Grafana annotation: %s; retrying in %.1f s", outcome.error, pause)
            self._wait(pause)
            if self._abandon.is_set():  # stop() gave up waiting
                break
        self._count_failed()
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        log.warning("Grafana annotation not posted%s: %s", tries, outcome.error)

    def _send(self, client: httpx.Client, body: dict[str, Any]) -> _Outcome:
        try:
            response = client.post(self._endpoint, json=body)
        except httpx.TransportError as e:  # connection refused or lost, timeouts
            return _Outcome(False, True, self._redact(f"{type(e).__name__}: {e}"))
        if response.is_success:
            return _Outcome(True)
        error = self._redact(
            f"POST {ANNOTATIONS_PATH} answered {response.status_code}: {_message(response)}"
        )
        if response.status_code == 429 or response.status_code >= 500:
            return _Outcome(False, True, error, _retry_after_s(response))
        return _Outcome(False, False, error)

    def _wait(self, pause_s: float) -> None:
        if self._sleep is not None:
            self._sleep(pause_s)
        else:
            self._abandon.wait(pause_s)

    def _count_failed(self) -> None:
        with self._lock:
            self.failed += 1

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***")


def _message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return _shorten(response.text)
    message = data.get("message") if isinstance(data, dict) else None
    return _shorten(str(message)) if message else _shorten(response.text)


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    # Only the seconds form; an HTTP date falls back to the backoff.
    return float(value) if value.isdigit() else None


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def _replicas(value: int | None) -> str:
    return "?" if value is None else str(value)


def _epoch_ms(at: datetime) -> int:
    # Whole milliseconds, by integer arithmetic: float seconds would round some instants.
    return (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)

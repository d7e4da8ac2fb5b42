"""Scale changes pushed to Grafana's annotations API, against a local HTTP receiver.

The receiver answers as Grafana's ``POST /api/annotations`` does: 404 on another path,
401 without the right bearer token, 400 for a body Grafana would refuse; otherwise the
status the test scripted. It records every request, so each test also asserts what was
sent. The poster's backoff waits go to an injected ``sleep`` that only records them.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from pdscaler import wiring
from pdscaler.config import Settings, SettingsError, load_settings
from pdscaler.control.clock import FakeClock
from pdscaler.control.fakes import FakeMetricsSource, RecordingActuator
from pdscaler.domain.decision import DecisionStatus, Step
from pdscaler.domain.errors import InvalidInput
from pdscaler.domain.policy import Role, parse_policy
from pdscaler.domain.signals import PoolKey, PoolSignals, Signal, SignalName
from pdscaler.grafana.annotations import (
    Annotation,
    AnnotationPoster,
    is_applied_change,
    scale_annotation,
)
from pdscaler.store.db import Database
from pdscaler.store.decisions import DecisionFilter, DecisionStore
from pdscaler.store.policies import PolicyStore
from tests.control.harness import NS
from tests.factories import decision, policy_doc

TOKEN = "glsa_test-token-0123456789abcdef"
AT = datetime(2026, 3, 1, 12, 0, 7, 250_000, tzinfo=UTC)
AT_MS = 1772366407250
API_URL = "https://pdscaler.example.org"
DECISION_ID = 123


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Receiver:
    """A stand-in for Grafana's annotations endpoint on 127.0.0.1."""

    url: str
    replies: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # then 200s
    requests: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    hold: bool = False  # answer only once ``release`` is set

    def answer(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> int:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self.requests.append(Received(method, path, headers, body))
        if self.hold:
            self.release.wait(30)
        if method != "POST" or path != "/api/annotations":
            return 404
        if headers.get("authorization") != f"Bearer {TOKEN}":
            return 401
        if not _grafana_would_accept(headers, body):
            return 400
        return self.replies.pop(0)[0] if self.replies else 200

    def extra_headers(self) -> dict[str, str]:
        return self.replies[0][1] if self.replies else {}


def _grafana_would_accept(headers: dict[str, str], body: Any) -> bool:
    """The shape of a create-annotation request in Grafana's HTTP API."""
    return (
        headers.get("content-type") == "application/json"
        and isinstance(body, dict)
        and isinstance(body.get("text"), str)
        and isinstance(body.get("time"), int)
        and isinstance(body.get("tags"), list)
        and all(isinstance(tag, str) for tag in body["tags"])
        and isinstance(body.get("dashboardUID", ""), str)
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            extra = state.extra_headers()
            status = state.answer(self.command, self.path, headers, raw)
            payload = json.dumps({"message": "Annotation added" if status == 200 else "no"})
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload.encode())

        do_POST = do_PUT = do_GET = _handle  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.block_on_close = False
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()


def wait_until(ready: Callable[[], bool], deadline_s: float = 10.0) -> None:
    """Poll until ``ready()``; fail at the deadline. Readiness only: no timing asserted."""
    deadline = time.monotonic() + deadline_s
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail("the annotation worker did not get there in time")
        time.sleep(0.005)


def applied_change(**kwargs: Any) -> Annotation:
    record = decision(AT, current=2, desired=4, status=DecisionStatus.APPLIED, **kwargs)
    return scale_annotation(record, DECISION_ID, dashboard_uid="pdscaler", api_url=API_URL)


# --- the annotation -------------------------------------------------------------------------


def test_an_applied_change_becomes_a_tagged_annotation_linking_to_its_decision() -> None:
    annotation = applied_change(namespace="inference", policy="llama", role=Role.PREFILL)

    assert annotation.at == AT
    assert annotation.tags == ("pdscaler", "inference/llama", "prefill", "scale_up")
    assert annotation.text == (
        "inference/llama prefill: 2 -&gt; 4 (ScaleUpLimit: at most 1 pod per 15s) · "
        '<a href="https://pdscaler.example.org/v1/decisions/123">decision 123</a>'
    )
    assert annotation.body() == {
        "time": AT_MS,
        "tags": ["pdscaler", "inference/llama", "prefill", "scale_up"],
        "text": annotation.text,
        "dashboardUID": "pdscaler",
    }


@pytest.mark.parametrize(
    ("api_url", "link"),
    [
        ("https://example.org/pdscaler/", '<a href="https://example.org/pdscaler/v1/decisions/7">'),
        (None, "decision 7 (/v1/decisions/7)"),
    ],
)
def test_the_link_uses_the_public_url_or_else_names_the_path(
    api_url: str | None, link: str
) -> None:
    record = decision(AT, current=6, desired=3, status=DecisionStatus.APPLIED)

    annotation = scale_annotation(record, 7, dashboard_uid=None, api_url=api_url)

    assert link in annotation.text
    assert annotation.tags[-1] == "scale_down"
    assert "dashboardUID" not in annotation.body()  # an organization annotation


def test_text_from_the_record_is_escaped() -> None:
    record = decision(AT, policy="a<b>", status=DecisionStatus.APPLIED)
    long_message = "<script>&</script>" + "m" * 300
    record = replace(record, steps=(Step("limit", 3, "ScaleUpLimit", long_message),))

    text = scale_annotation(record, 1, dashboard_uid=None, api_url=None).text

    assert "<script>" not in text
    assert "a&lt;b&gt;" in text
    assert "(ScaleUpLimit: &lt;script&gt;&amp;&lt;/script&gt;mmm" in text
    assert "m" * 200 not in text  # the message is cut short


@pytest.mark.parametrize(
    ("status", "current", "desired", "annotated"),
    [
        (DecisionStatus.APPLIED, 2, 4, True),
        (DecisionStatus.APPLIED, 4, 4, False),
        (DecisionStatus.FAILED, 2, 4, False),
        (DecisionStatus.SKIPPED, 2, 4, False),
    ],
)
def test_only_applied_changes_are_annotated(
    status: DecisionStatus, current: int, desired: int, annotated: bool
) -> None:
    record = decision(AT, current=current, desired=desired, status=status)

    assert is_applied_change(record) is annotated


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(InvalidInput, match="naive"):
        Annotation(at=datetime(2026, 3, 1), tags=(), text="x")


# --- posting --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    replies: list[tuple[int, dict[str, str]]]
    token: str = TOKEN
    # expected
    posted: int = 1
    failed: int = 0
    requests: int = 1
    sleeps: list[float] = field(default_factory=list)


SCENARIOS = {
    "accepted at once": Scenario(replies=[]),
    "503 twice, then accepted": Scenario(
        replies=[(503, {}), (503, {})], requests=3, sleeps=[0.5, 1.0]
    ),
    "429 with Retry-After, capped": Scenario(
        replies=[(429, {"Retry-After": "2"}), (429, {"Retry-After": "120"})],
        requests=3,
        sleeps=[2.0, 10.0],
    ),
    "5xx past the retries": Scenario(
        replies=[(500, {})] * 4, posted=0, failed=1, requests=4, sleeps=[0.5, 1.0, 2.0]
    ),
    "400 is not retried": Scenario(replies=[(400, {})], posted=0, failed=1),
    "a wrong token is not retried": Scenario(replies=[], token="wrong", posted=0, failed=1),
}


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_posting_follows_grafanas_answers(receiver: Receiver, scenario: Scenario) -> None:
    receiver.replies = list(scenario.replies)
    sleeps: list[float] = []
    poster = AnnotationPoster(receiver.url, scenario.token, retries=3, backoff_s=0.5,
                              max_backoff_s=10.0, sleep=sleeps.append)  # fmt: skip
    poster.start()

    accepted = poster.submit(applied_change())
    wait_until(lambda: poster.posted + poster.failed == 1)
    poster.stop()

    assert accepted is True
    assert (poster.posted, poster.failed, poster.dropped) == (scenario.posted, scenario.failed, 0)
    assert len(receiver.requests) == scenario.requests
    assert sleeps == scenario.sleeps


def test_one_applied_change_is_posted_once_as_grafana_expects(receiver: Receiver) -> None:
    poster = AnnotationPoster(receiver.url, TOKEN)
    poster.start()

    poster.submit(applied_change(namespace="inference", policy="llama", role=Role.DECODE))
    wait_until(lambda: poster.posted == 1)
    poster.stop()

    [request] = receiver.requests
    assert (request.method, request.path) == ("POST", "/api/annotations")
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert request.body["time"] == AT_MS
    assert request.body["tags"] == ["pdscaler", "inference/llama", "decode", "scale_up"]
    assert f'href="{API_URL}/v1/decisions/{DECISION_ID}"' in request.body["text"]
    assert request.body["dashboardUID"] == "pdscaler"
    assert poster.failed == poster.dropped == poster.pending == 0


def test_grafana_under_a_sub_path_is_posted_to_under_it(receiver: Receiver) -> None:
    poster = AnnotationPoster(receiver.url + "/grafana/", TOKEN)
    poster.start()

    poster.submit(applied_change())
    wait_until(lambda: poster.failed == 1)  # the receiver serves no sub-path: 404
    poster.stop()

    assert [r.path for r in receiver.requests] == ["/grafana/api/annotations"]


def test_a_full_queue_drops_and_counts(receiver: Receiver) -> None:
    receiver.hold = True
    poster = AnnotationPoster(receiver.url, TOKEN, queue_size=2)
    poster.start()

    first = poster.submit(applied_change())
    wait_until(lambda: len(receiver.requests) == 1)  # in flight, out of the queue
    queued = [poster.submit(applied_change()) for _ in range(2)]
    overflow = poster.submit(applied_change())
    pending, dropped = poster.pending, poster.dropped
    receiver.release.set()
    wait_until(lambda: poster.posted == 3)
    poster.stop()

    assert (first, queued, overflow) == (True, [True, True], False)
    assert (pending, dropped) == (2, 1)
    assert (poster.posted, poster.failed, poster.dropped) == (3, 0, 1)


def test_submit_never_waits_for_a_hanging_grafana(receiver: Receiver) -> None:
    receiver.hold = True
    poster = AnnotationPoster(receiver.url, TOKEN, queue_size=2)
    poster.start()

    results = [poster.submit(applied_change()) for _ in range(10)]
    dropped = poster.dropped
    receiver.release.set()
    wait_until(lambda: poster.posted == results.count(True))
    poster.stop()

    assert results.count(True) + dropped == 10
    assert 2 <= results.count(True) <= 3  # the queue, and at most one in flight
    assert poster.dropped == dropped


def test_stop_gives_up_on_a_grafana_that_is_down() -> None:
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    sleeps: list[float] = []
    poster = AnnotationPoster(url, TOKEN, retries=2, sleep=sleeps.append)
    poster.start()

    poster.submit(applied_change())
    poster.stop(timeout_s=10)

    assert (poster.posted, poster.failed, poster.dropped, poster.pending) == (0, 1, 0, 0)
    assert sleeps == [0.5, 1.0]
    assert poster.submit(applied_change()) is False
    assert poster.dropped == 1


def test_stop_drops_what_it_could_not_post_in_time(receiver: Receiver) -> None:
    receiver.hold = True
    poster = AnnotationPoster(receiver.url, TOKEN, queue_size=10)
    poster.start()
    for _ in range(3):
        poster.submit(applied_change())
    wait_until(lambda: len(receiver.requests) == 1)

    poster.stop(timeout_s=0.05)  # the receiver is still holding the first
    receiver.release.set()

    assert (poster.dropped, poster.pending) == (2, 0)


def test_stop_cuts_a_backoff_wait_short(receiver: Receiver) -> None:
    receiver.replies = [(503, {"Retry-After": "0"}), (503, {})]
    poster = AnnotationPoster(receiver.url, TOKEN, backoff_s=3600, max_backoff_s=3600)
    poster.start()
    poster.submit(applied_change())
    wait_until(lambda: len(receiver.requests) == 2)  # retried at once, then waits an hour

    poster.stop(timeout_s=0.05)

    wait_until(lambda: poster.failed == 1)
    assert len(receiver.requests) == 2


def test_start_and_stop_twice_are_harmless(receiver: Receiver) -> None:
    poster = AnnotationPoster(receiver.url, TOKEN)
    poster.start()
    poster.start()
    poster.submit(applied_change())

    poster.stop()
    poster.stop()

    assert (poster.posted, len(receiver.requests)) == (1, 1)
    with pytest.raises(RuntimeError, match="restarted"):
        poster.start()


def test_the_token_never_reaches_the_log(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.replies = [(503, {}), (400, {})]
    poster = AnnotationPoster(receiver.url, TOKEN, queue_size=1, sleep=lambda _: None)
    poster.start()

    poster.submit(applied_change())
    wait_until(lambda: poster.failed == 1)
    for _ in range(3):
        poster.submit(applied_change())
    wait_until(lambda: poster.posted + poster.failed + poster.dropped == 4)
    poster.stop()

    assert "annotation not posted" in caplog.text
    assert TOKEN not in caplog.text
    assert TOKEN[-12:] not in caplog.text


@pytest.mark.parametrize(("url", "token"), [("grafana:3000", TOKEN), ("http://grafana:3000", "")])
def test_a_poster_needs_an_http_url_and_a_token(url: str, token: str) -> None:
    with pytest.raises(InvalidInput):
        AnnotationPoster(url, token)


# --- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "missing"),
    [
        ({}, "PDSCALER_GRAFANA__URL and PDSCALER_GRAFANA__API_TOKEN are not set"),
        ({"PDSCALER_GRAFANA__URL": "http://grafana:3000"}, "PDSCALER_GRAFANA__API_TOKEN is"),
        ({"PDSCALER_GRAFANA__API_TOKEN": TOKEN}, "PDSCALER_GRAFANA__URL is not set"),
    ],
)
def test_annotations_without_url_or_token_fail_at_start_up(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], missing: str
) -> None:
    monkeypatch.setenv("PDSCALER_GRAFANA__ANNOTATIONS", "true")
    for name, value in variables.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(SettingsError, match="PDSCALER_GRAFANA__ANNOTATIONS is on") as raised:
        load_settings()

    assert missing in str(raised.value)
    assert TOKEN not in str(raised.value)


def test_annotations_are_off_by_default_and_on_with_url_and_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().grafana.annotations is False

    monkeypatch.setenv("PDSCALER_GRAFANA__ANNOTATIONS", "true")
    monkeypatch.setenv("PDSCALER_GRAFANA__URL", "http://grafana:3000")
    monkeypatch.setenv("PDSCALER_GRAFANA__API_TOKEN", TOKEN)

    assert load_settings().grafana.annotations is True


# --- the service: the loop's applied changes, posted --------------------------------------


def test_the_service_posts_each_applied_change_and_counts_it(
    receiver: Receiver, settings: Settings, db: Database, clock: FakeClock
) -> None:
    configured = settings.model_copy(update={
        "loop": settings.loop.model_copy(update={"enabled": True}),
        "grafana": settings.grafana.model_copy(update={"url": receiver.url, "annotations": True,
                                                       "api_token": SecretStr(TOKEN)}),
        "api": settings.api.model_copy(update={"public_url": API_URL}),
    })  # fmt: skip
    metrics, actuator = FakeMetricsSource(), RecordingActuator()
    doc = policy_doc(name="llama")
    PolicyStore(db).create(parse_policy(doc), author="t", comment="", now=clock.now())
    for role in Role:
        actuator.add(NS, doc["spec"][role.value]["scaleTargetRef"]["name"], 2)
    metrics.set(PoolKey(NS, "llama", Role.PREFILL), PoolSignals(
        {SignalName.QUEUED_PREFILL_TOKENS: Signal.fresh(16_384 * 4, clock.now())}))  # fmt: skip
    metrics.set(PoolKey(NS, "llama", Role.DECODE), PoolSignals(
        {SignalName.KV_CACHE_UTILIZATION: Signal.fresh(0.5, clock.now())}))  # fmt: skip
    runtime = wiring.build_runtime(configured, db, clock, wiring.Backends(metrics, actuator))
    assert runtime.loop is not None

    runtime.loop.start(paused=True)  # the poster's thread, no scheduled ticks
    try:
        runtime.loop.run_once()  # prefill 2 -> 4
        wait_until(lambda: len(receiver.requests) >= 1)
    finally:
        runtime.loop.stop()

    page, _ = DecisionStore(db).page(DecisionFilter(policy="llama", role=Role.PREFILL), limit=1)
    (sent,) = receiver.requests
    assert sent.body["tags"] == ["pdscaler", f"{NS}/llama", "prefill", "scale_up"]
    assert f'href="{API_URL}/v1/decisions/{page[0].id}"' in sent.body["text"]
    assert sent.body["dashboardUID"] == "pdscaler"
    with TestClient(runtime.app) as client:
        exposition = client.get("/metrics").text
    assert "pdscaler_grafana_annotations_posted_total 1.0" in exposition
    assert "pdscaler_grafana_annotations_dropped_total 0.0" in exposition

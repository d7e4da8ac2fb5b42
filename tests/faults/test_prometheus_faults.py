"""Prometheus failing under a running loop (the real binary, scraping a fake vLLM fleet).

The policy's prefill pool runs 4 replicas with nothing waiting: with good metrics it
scales down at once (no scale-down window). Expected, case by case:

- Prometheus killed: the tick holds the pool (no scale-down), its row records the signals
  as ``error``; restarted, the first tick after its first scrape scales down again;
- Prometheus hanging (a server that accepts and never answers): the query times out, the
  tick holds, audited;
- Prometheus answering errors (503 to every query): held, audited;
- the series gone (the pods' exporter stops showing them: data that no longer comes):
  held, the signal recorded as ``empty``.

"Held" means: not scaled down, the quality gate's reason on the row, and the signal the
pool sizes on (queued requests) recorded with the quality that says why.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pdscaler.config import PrometheusSettings
from pdscaler.control.clock import SystemClock
from pdscaler.control.controller import Controller, ControllerConfig
from pdscaler.control.fakes import RecordingActuator
from pdscaler.domain.decision import DecisionRecord
from pdscaler.domain.policy import Role, parse_policy
from pdscaler.forecast.baselines import LastValue
from pdscaler.metrics.connect import prometheus_source
from pdscaler.store.db import Database
from pdscaler.store.decisions import DecisionFilter, DecisionStore
from pdscaler.store.policies import PolicyStore
from tests.factories import policy_doc
from tests.fleet import FakeFleet
from tests.prometheus import PrometheusServer

P, D = Role.PREFILL, Role.DECODE
HELD = {"MetricsMissing", "MetricsPartial", "Fallback"}  # the gate's reasons for holding


@pytest.fixture(scope="module")
def fleet() -> Iterator[FakeFleet]:
    with FakeFleet() as fake:
        yield fake


@pytest.fixture(scope="module")
def prometheus(
    fleet: FakeFleet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    data_dir = tmp_path_factory.mktemp("prometheus-faults")
    server = PrometheusServer(targets=[fleet.target], data_dir=data_dir)
    try:
        server.start()
        server.wait_ready()
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def live(prometheus: PrometheusServer) -> PrometheusServer:
    if not prometheus.is_running:
        prometheus.restart()
        prometheus.wait_ready()
    return prometheus


class Loop:
    """A controller over one policy whose pods are in the fake fleet."""

    def __init__(self, db: Database, fleet: FakeFleet, url: str) -> None:
        self.namespace = f"f-{uuid.uuid4().hex[:8]}"
        doc = policy_doc({"spec": {
            "prefill": {"metrics": [{"type": "QueuedRequests", "targetPerReplica": 4}],
                        "metricsSelector": {"role": "prefill"},
                        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}},
            "decode": {"metricsSelector": {"role": "decode"}},
        }}, namespace=self.namespace)  # fmt: skip
        PolicyStore(db).create(parse_policy(doc), author="t", comment="", now=SystemClock().now())
        self.actuator = RecordingActuator()
        self.actuator.add(self.namespace, "prefill", 4)
        self.actuator.add(self.namespace, "decode", 2)
        for role, pod in ((P, "prefill-0"), (D, "decode-0")):
            fake = fleet.add_pod(engine="vllm", namespace=self.namespace, pod=pod,
                                 labels={"role": role.value})  # fmt: skip
            fake.set("vllm:kv_cache_usage_perc", 0.75)
            fake.set("vllm:num_requests_waiting", 0)
        self.decisions = DecisionStore(db)
        settings = PrometheusSettings(url=url, timeout=timedelta(seconds=1), retries=0,
                                      scrape_interval=timedelta(seconds=1))  # fmt: skip
        self.controller = Controller(
            policies=PolicyStore(db), decisions=self.decisions,
            metrics=prometheus_source(settings), actuator=self.actuator,
            forecaster=LastValue(), clock=SystemClock(),
            config=ControllerConfig(interval=timedelta(seconds=1), max_sample_age_s=30,
                                    namespaces=frozenset({self.namespace})),
        )  # fmt: skip

    def tick(self) -> DecisionRecord:
        self.controller.tick()
        page, _ = self.decisions.page(DecisionFilter(namespace=self.namespace, role=P), limit=1)
        return page[0].record

    def prefill(self) -> int:
        return self.actuator.replicas(self.namespace, "prefill")


def _held(record: DecisionRecord, quality: str) -> bool:
    reasons = {s.reason for s in record.steps}
    qualities = {s["quality"] for s in record.signals.values()}
    return (
        record.desired_replicas == record.current_replicas
        and bool(reasons & HELD)
        and (qualities == {quality})
    )


def _wait_scraped(prometheus: PrometheusServer) -> None:
    prometheus.wait_for_scrape()
    prometheus.wait_for_scrape()  # a whole scrape after the pods were set


def test_killed_prometheus_holds_the_pool_and_the_first_tick_after_it_returns_acts(
    db: Database, fleet: FakeFleet, live: PrometheusServer
) -> None:
    loop = Loop(db, fleet, live.url)
    _wait_scraped(live)

    live.kill()
    down = loop.tick()
    live.restart()
    live.wait_ready()
    _wait_scraped(live)
    back = loop.tick()

    assert _held(down, "error"), (down.steps, down.signals)
    assert back.desired_replicas is not None
    assert back.desired_replicas < 4
    assert loop.prefill() == back.desired_replicas


@pytest.fixture
def hanging() -> Iterator[str]:
    """Accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


@pytest.fixture
def failing() -> Iterator[str]:
    """Answers every query with 503 and Prometheus's error body."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"status": "error", "errorType": "unavailable",
                               "error": "overloaded"}).encode()  # fmt: skip
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("server", ["hanging", "failing"])
def test_a_hanging_or_failing_prometheus_holds_the_pool(
    db: Database, fleet: FakeFleet, server: str, request: pytest.FixtureRequest
) -> None:
    loop = Loop(db, fleet, request.getfixturevalue(server))

    record = loop.tick()

    assert _held(record, "error")
    assert loop.actuator.writes == []


def test_series_that_stop_coming_hold_the_pool(
    db: Database, fleet: FakeFleet, live: PrometheusServer
) -> None:
    loop = Loop(db, fleet, live.url)
    _wait_scraped(live)
    fleet.clear(loop.namespace)  # the pods' series go: staleness markers at the next scrape
    _wait_scraped(live)
    deadline = time.monotonic() + 20
    record = loop.tick()
    while record.signals.get("queuedRequests", {}).get("quality") != "empty":
        assert time.monotonic() < deadline, record.signals  # readiness, not timing
        time.sleep(0.5)
        record = loop.tick()

    assert record.desired_replicas == record.current_replicas
    assert {s.reason for s in record.steps} & HELD
    assert record.signals["queuedRequests"]["quality"] == "empty"
    assert loop.actuator.writes == []

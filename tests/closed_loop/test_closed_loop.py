"""The whole loop with a real Prometheus: simulated vLLM servers, scraped, read, scaled.

The simulated cluster replays a trace with a burst, ten times faster than real time. Each
of its replicas is a vLLM pod on the exporter, which a real Prometheus scrapes every second;
pdscaler reads the pools through its Prometheus source, decides, audits each decision in
Postgres, and writes ``/scale`` of two Deployments on the API server emulator through the
Kubernetes actuator; the simulated pools follow those Deployments, cold starts included.

Prometheus stamps samples with real time, so pdscaler runs on real time: its policy's
windows and cold start are real seconds (a tenth of the simulated ones). The queue and KV
gauges it scales on do not depend on the speed-up; rates would (they are per real second).
What the test asserts is the shape of the run, not when things happened: no pool grows
before the burst, both grow under it and are back at their minimum after it, every tick
audits both pools, and the writes the emulator saw are exactly the applied decisions.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from pdscaler.actuator.kubernetes import KubernetesActuator
from pdscaler.config import PrometheusSettings
from pdscaler.control.clock import SystemClock
from pdscaler.control.controller import Controller, ControllerConfig, TickReport
from pdscaler.domain.decision import DecisionStatus
from pdscaler.domain.policy import Role, parse_policy
from pdscaler.forecast.baselines import LastValue
from pdscaler.metrics.connect import prometheus_source
from pdscaler.profiles import DEFAULT_PROFILE, load_profile
from pdscaler.sim.cluster import Cluster, SimConfig
from pdscaler.sim.exporter import SimExporter
from pdscaler.sim.traces import Request, concat, load_trace, scale_rate, window
from pdscaler.store import migrate
from pdscaler.store.db import Database, create_db_engine
from pdscaler.store.decisions import DecisionFilter, DecisionStore, StoredDecision
from pdscaler.store.policies import PolicyStore
from tests.closed_loop.follower import ClusterFollower, KubeEmulator, Sample, scale_writes
from tests.conftest import TempPostgres
from tests.prometheus import PrometheusServer

pytestmark = pytest.mark.postgres

P, D = Role.PREFILL, Role.DECODE
NS, MODEL = "inference", "llama"
DEPLOYMENTS = {P: "llama-prefill", D: "llama-decode"}
BUNDLED = Path(str(files("pdscaler.sim") / "data" / "azure-conv-10min.csv"))

SPEED = 10.0  # simulated seconds per real second
TICK_S = 1.0  # real seconds between ticks
QUIET_S, BURST_S, TAIL_S = 60.0, 120.0, 180.0  # simulated
BURST_FACTOR = 20.0  # the burst's request rate over the trace's
END_S = QUIET_S + BURST_S + TAIL_S + 30.0  # simulated; the last requests finish well before
COLD_START_S = 30.0  # simulated: three ticks
# A decode replica's KV cache, in tokens: small enough that the burst fills one.
KV_CAPACITY_TOKENS = 131_072

# Up by as many as four pods a second; down only after a window long enough to ride out
# the moments of a burst when every queue happens to be empty.
BEHAVIOR = {
    "scaleUp": {"policies": [{"type": "Pods", "value": 4, "periodSeconds": 1}]},
    "scaleDown": {
        "stabilizationWindowSeconds": 8,
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 1}],
    },
}


def pool(role: Role, max_replicas: int, metrics: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                           "name": DEPLOYMENTS[role]},
        "minReplicas": 1,
        "maxReplicas": max_replicas,
        "metricsSelector": {"model_name": MODEL},
        "metrics": metrics,
        "behavior": BEHAVIOR,
    }  # fmt: skip


POLICY = {
    "apiVersion": "pdscaler.io/v1alpha1",
    "kind": "PDScalingPolicy",
    "metadata": {"name": MODEL, "namespace": NS},
    "spec": {
        "mode": "active",
        "engine": "vllm",
        "coldStartSeconds": round(COLD_START_S / SPEED),
        # the loop runs on real seconds, the simulation ten times faster: a burst's panic
        # window, like the other windows, is in real seconds (6 s: 60 s simulated)
        "panic": {"windowSeconds": round(60 / SPEED)},
        "prefill": pool(P, 6, [{"type": "QueuedPrefillTokens", "targetPerReplica": 32768},
                               {"type": "QueuedRequests", "targetPerReplica": 32}]),
        "decode": pool(D, 8, [{"type": "KVCacheUtilization", "target": 0.6}]),
    },
}  # fmt: skip


def burst_trace() -> tuple[list[Request], float, float]:
    """Quiet, a burst at twenty times the rate, quiet again: the trace, and when the burst
    starts and ends."""
    trace = load_trace(BUNDLED)
    quiet = window(trace, 0, QUIET_S)
    burst = scale_rate(window(trace, QUIET_S, QUIET_S + BURST_S), BURST_FACTOR)
    tail = window(trace, QUIET_S + BURST_S, QUIET_S + BURST_S + TAIL_S)
    joined = concat([quiet, burst, tail])
    return joined, joined[len(quiet)].arrival_s, joined[len(quiet) + len(burst) - 1].arrival_s


@pytest.fixture
def postgres(temp_postgres: TempPostgres) -> Iterator[Database]:
    database = Database(create_db_engine(temp_postgres.create()))
    migrate.upgrade(database.engine)
    yield database
    database.dispose()


def run_loop(controller: Controller, follower: ClusterFollower) -> list[TickReport]:
    """Tick every TICK_S real seconds until the simulation reaches END_S."""
    reports = []
    next_at = time.monotonic()
    while follower.sim_s() < END_S:
        reports.append(controller.tick())
        next_at += TICK_S
        time.sleep(max(0.0, next_at - time.monotonic()))
    return reports


def test_pools_grow_under_a_burst_and_shrink_after_it(tmp_path: Path, postgres: Database) -> None:
    trace, burst_start_s, burst_end_s = burst_trace()
    initial = {P: 1, D: 1}
    profile = load_profile(DEFAULT_PROFILE)
    config = SimConfig(profile, cold_start_s=COLD_START_S, kv_capacity_tokens=KV_CAPACITY_TOKENS)
    cluster = Cluster(config, trace, initial)
    prefixes = {role: f"{name}-sim" for role, name in DEPLOYMENTS.items()}
    exporter = SimExporter(cluster, namespace=NS, model=MODEL, pod_prefixes=prefixes)
    policies, decisions = PolicyStore(postgres), DecisionStore(postgres)
    clock = SystemClock()
    policies.create(parse_policy(POLICY), author="test", comment="", now=clock.now())
    with (
        exporter,
        KubeEmulator() as emulator,
        PrometheusServer(targets=[exporter.target], data_dir=tmp_path, job="sim") as prometheus,
    ):
        settings = PrometheusSettings(
            url=prometheus.url,
            scrape_interval=timedelta(seconds=1),
            stale_after=timedelta(seconds=5),
            rate_window=timedelta(seconds=10),
            timeout=timedelta(seconds=2),
            retries=0,
        )
        controller = Controller(
            policies=policies,
            decisions=decisions,
            metrics=prometheus_source(settings),
            actuator=KubernetesActuator(emulator.transport(), clock),
            forecaster=LastValue(),
            clock=clock,
            config=ControllerConfig(
                interval=timedelta(seconds=TICK_S), max_sample_age_s=10, identity="closed-loop"
            ),
        )
        follower = ClusterFollower(cluster, exporter, emulator, NS, DEPLOYMENTS, speed=SPEED)
        follower.create(initial)
        follower.start()
        try:
            reports = run_loop(controller, follower)
        finally:
            follower.stop()

    with exporter.lock:
        assert cluster.done(), f"{len(cluster.finished)} of {len(trace)} requests finished"
    for role in Role:
        sizes = _sizes(follower.samples, role)  # (simulated second, replicas) at each change
        before = [replicas for at, replicas in sizes if at < burst_start_s]
        during = [replicas for at, replicas in sizes if at <= burst_end_s]
        assert before == [initial[role]], f"{role} grew before the burst: {sizes}"
        assert max(during) > initial[role], f"{role} did not grow under the burst: {sizes}"
        assert sizes[-1][1] == initial[role], f"{role} is not back at its minimum: {sizes}"

    rows = _all_decisions(decisions)
    assert len(rows) == 2 * len(reports)
    assert all(r.decisions == 2 and r.failures == 0 and r.audited for r in reports)
    by_tick: dict[str, set[Role]] = {}
    for row in rows:
        by_tick.setdefault(row.record.tick_id, set()).add(row.record.role)
    assert all(roles == set(Role) for roles in by_tick.values())
    statuses = {row.record.status for row in rows}
    assert statuses <= {DecisionStatus.APPLIED, DecisionStatus.SKIPPED}, statuses
    for role in Role:
        applied = [r.record for r in rows if r.record.role is role
                   and r.record.status is DecisionStatus.APPLIED]  # fmt: skip
        assert [r.desired_replicas for r in applied] == scale_writes(emulator, DEPLOYMENTS[role])
        # No one else writes: each write starts from the size the one before set.
        previous = [initial[role], *(r.desired_replicas for r in applied[:-1])]
        assert [r.current_replicas for r in applied] == previous
        # The pods follow the simulation: replicas asked for were seen starting.
        assert any(row.record.pending_replicas for row in rows if row.record.role is role)


def _all_decisions(store: DecisionStore) -> list[StoredDecision]:
    """Every decision, oldest first."""
    page, after = store.page(DecisionFilter(), limit=100_000)
    assert after is None
    return sorted(page, key=lambda d: d.position)


def _sizes(samples: list[Sample], role: Role) -> list[tuple[float, int]]:
    """(simulated second, replicas) at each change of a pool's Deployment."""
    sizes: list[tuple[float, int]] = []
    for sample in samples:
        if not sizes or sizes[-1][1] != sample.deployment[role]:
            sizes.append((round(sample.sim_s, 1), sample.deployment[role]))
    return sizes

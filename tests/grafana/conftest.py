"""The dashboard, and the real systems its queries run on.

- Postgres: a throw-away database at the head migration, with two policies and decisions
  seeded through the project's own stores.
- Prometheus: the real binary scraping the fake engine fleet (vLLM and DCGM pods) and a
  small exporter of pdscaler's own metric names, made with prometheus_client.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pdscaler.domain.decision import DecisionStatus, TickSummary
from pdscaler.domain.policy import Role, parse_policy
from pdscaler.grafana.dashboard import render
from pdscaler.sim.exporter import MetricsEndpoint, ServesMetrics
from pdscaler.store import migrate
from pdscaler.store.db import Database, create_db_engine
from pdscaler.store.decisions import DecisionStore
from pdscaler.store.policies import PolicyStore
from pdscaler.telemetry import Telemetry
from tests.conftest import TempPostgres
from tests.factories import decision, policy_doc
from tests.fleet import FakeFleet
from tests.prometheus import PrometheusServer

NAMESPACE = "inference"
OTHER_NAMESPACE = "batch"
# When the seeded decisions were made: the first tick, then one every 15 s.
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TICK = timedelta(seconds=15)


@pytest.fixture(scope="session")
def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(render())
    return document


# --- Postgres -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    db: Database
    ids: dict[str, int]  # a name per decision, as the tests refer to them


@pytest.fixture(scope="module")
def seeded(temp_postgres: TempPostgres) -> Iterator[Seeded]:
    """Decisions of inference/llama (both pools, three ticks) and batch/qwen (one).

    llama prefill scales up at the 2nd and 3rd ticks, decode never changes, and qwen's
    decode scales down (applied); qwen's policy is at version 2.
    """
    db = Database(create_db_engine(temp_postgres.create()))
    migrate.upgrade(db.engine)
    policies, decisions = PolicyStore(db), DecisionStore(db)
    policies.create(parse_policy(policy_doc(name="llama", namespace=NAMESPACE)), author="t",
                    comment="", now=T0 - timedelta(hours=1))  # fmt: skip
    qwen = parse_policy(policy_doc(name="qwen", namespace=OTHER_NAMESPACE))
    policies.create(qwen, author="t", comment="", now=T0 - timedelta(hours=1))
    changed = parse_policy(policy_doc({"spec": {"decode": {"maxReplicas": 20}}}, name="qwen",
                                      namespace=OTHER_NAMESPACE))  # fmt: skip
    policies.apply(changed, author="t", comment="more decode", now=T0 - timedelta(minutes=30))
    ids = {}
    for tick in range(3):
        at = T0 + tick * TICK
        ids[f"llama-prefill-{tick}"] = decisions.record(
            decision(
                at,
                namespace=NAMESPACE,
                role=Role.PREFILL,
                current=2 + max(tick - 1, 0),
                desired=2 + tick,
            )
        )
        ids[f"llama-decode-{tick}"] = decisions.record(
            decision(at, namespace=NAMESPACE, role=Role.DECODE, current=4, desired=4)
        )
    qwen_down = decision(T0 + TICK, namespace=OTHER_NAMESPACE, policy="qwen", role=Role.DECODE,
                         current=6, desired=3, status=DecisionStatus.APPLIED)  # fmt: skip
    ids["qwen-decode"] = decisions.record(dataclasses.replace(qwen_down, policy_version=2))
    yield Seeded(db, ids)
    db.dispose()


# --- Prometheus -----------------------------------------------------------------------------


class PdscalerMetrics(ServesMetrics):
    """pdscaler's own metrics, as its :class:`Telemetry` serves them after one tick that
    scaled one policy's prefill pool from 2 to 3 (one replica on its way)."""

    def __init__(self) -> None:
        self.telemetry = Telemetry()
        self.telemetry.leader(lambda: True)
        record = dataclasses.replace(
            decision(datetime(2026, 3, 1, tzinfo=UTC), namespace=NAMESPACE, policy="llama",
                     role=Role.PREFILL, current=2, desired=3),
            ready_replicas=2, pending_replicas=1,
            forecast={"arrivalRate": 12.5, "recentMae": 0.1},
        )  # fmt: skip
        self.telemetry.tick_done(TickSummary(
            at=record.decided_at, duration_s=0.02, records=(record,), applied=(record,),
            actuations={"200": 1}, source_failed=True, slos={(NAMESPACE, "llama"): (800.0, 30.0)},
        ))  # fmt: skip
        self._endpoint = MetricsEndpoint(self.telemetry.exposition, name="pdscaler")


def _engine_pods(fleet: FakeFleet) -> None:
    """One vLLM pod per role with a GPU each, all showing traffic."""
    for role, pod in (("prefill", "llama-prefill-0"), ("decode", "llama-decode-0")):
        vllm = fleet.add_pod(engine="vllm", namespace=NAMESPACE, pod=pod, labels={"role": role})
        for name, value in (
            ("vllm:num_requests_waiting", 3),
            ("vllm:num_requests_running", 8),
            ("vllm:kv_cache_usage_perc", 0.4),
            ("vllm:request_success_total", 100),
            ("vllm:prompt_tokens_total", 50_000),
            ("vllm:generation_tokens_total", 20_000),
        ):
            vllm.set(name, value)
        vllm.observe("vllm:time_to_first_token_seconds", 0.3, count=50)
        vllm.observe("vllm:inter_token_latency_seconds", 0.02, count=500)
        gpu = fleet.add_pod(engine="dcgm", namespace=NAMESPACE, pod=pod)
        gpu.set("DCGM_FI_DEV_GPU_UTIL", 70)
        gpu.set("DCGM_FI_DEV_POWER_USAGE", 450)


@pytest.fixture(scope="module")
def metrics_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A Prometheus scraping vLLM and DCGM pods of both roles, and pdscaler's metrics."""
    fleet, own = FakeFleet(), PdscalerMetrics()
    fleet.start()
    own.start()
    _engine_pods(fleet)
    data_dir = tmp_path_factory.mktemp("prometheus-grafana")
    server = PrometheusServer(targets=[fleet.target, own.target], data_dir=data_dir)
    try:
        with server:
            yield server
    finally:
        own.stop()
        fleet.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

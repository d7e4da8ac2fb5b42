"""One tick of pdscaler's controller that kills its own process with SIGKILL at a point:
after the decision rows are written (``record``), after the first ``/scale`` write
(``write``), or after the outcomes are recorded (``finish``). Its database and API server
outlive it; ``tests/faults/test_crash.py`` restarts pdscaler against them.

``python -m tests.faults.crash_child DATABASE_URL API_SERVER_URL POINT``
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from kubernetes.client import ApiClient, Configuration

from pdscaler.actuator.kubernetes import KubernetesActuator
from pdscaler.actuator.transport import Transport, TransportConfig
from pdscaler.control.clock import SystemClock
from pdscaler.control.controller import Controller, ControllerConfig
from pdscaler.control.fakes import FakeMetricsSource
from pdscaler.domain.policy import Role
from pdscaler.domain.signals import PoolKey, PoolSignals, Signal, SignalName
from pdscaler.forecast.baselines import LastValue
from pdscaler.store.db import Database, create_db_engine
from pdscaler.store.decisions import DecisionStore
from pdscaler.store.policies import PolicyStore

NS, POLICY = "inference", "llama"
# Four times the prefill pool's target of queued tokens per replica: it asks to grow.
QUEUED_PREFILL_TOKENS = 16_384 * 4
KV_CACHE_UTILIZATION = 0.75  # the decode pool is at its target: it stays


def controller(db_url: str, api_server_url: str) -> tuple[Controller, DecisionStore, Any]:
    """pdscaler's controller over the real database and API server, with the load above."""
    db = Database(create_db_engine(db_url))
    configuration = Configuration(host=api_server_url)
    configuration.no_proxy = "127.0.0.1"
    configuration.retries = False
    transport = Transport(ApiClient(configuration), TransportConfig(max_backoff_s=0.05))
    clock = SystemClock()
    metrics = FakeMetricsSource()
    now = clock.now()
    metrics.set(
        PoolKey(NS, POLICY, Role.PREFILL),
        PoolSignals({SignalName.QUEUED_PREFILL_TOKENS: Signal.fresh(QUEUED_PREFILL_TOKENS, now)}),
    )
    metrics.set(
        PoolKey(NS, POLICY, Role.DECODE),
        PoolSignals({SignalName.KV_CACHE_UTILIZATION: Signal.fresh(KV_CACHE_UTILIZATION, now)}),
    )
    decisions = DecisionStore(db)
    actuator = KubernetesActuator(transport, clock)
    built = Controller(
        policies=PolicyStore(db), decisions=decisions, metrics=metrics, actuator=actuator,
        forecaster=LastValue(), clock=clock,
        config=ControllerConfig(interval=timedelta(seconds=15), max_sample_age_s=60),
    )  # fmt: skip
    return built, decisions, actuator


def die_after(owner: object, method: str) -> None:
    """``owner.method`` does its work, then the process is killed, as by the OOM killer."""
    original: Callable[..., Any] = getattr(owner, method)

    def then_die(*args: Any, **kwargs: Any) -> Any:
        original(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    setattr(owner, method, then_die)


def main(db_url: str, api_server_url: str, point: str) -> int:
    built, decisions, actuator = controller(db_url, api_server_url)
    owner, method = {"record": (decisions, "record_many"), "write": (actuator, "write_scale"),
                     "finish": (decisions, "finish_many")}[point]  # fmt: skip
    die_after(owner, method)
    built.restore()
    built.tick()
    return 0  # not reached: the tick has a change to write


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

"""The Kubernetes API server misbehaving while pdscaler writes /scale (the real client
over HTTP to the emulator): bounded retries, every failure audited, nothing written twice.

Each case: the faults hit the tick's /scale write (and its retries); the next tick runs
with the server healthy. Expected: at most 1 + retries (2) PUTs per tick; the killed
write's row says what happened; the target ends at the decided size with exactly one
change of its replicas.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from pdscaler.actuator.kubernetes import KubernetesActuator
from pdscaler.control.clock import FakeClock
from pdscaler.control.controller import Controller, ControllerConfig
from pdscaler.control.fakes import FakeMetricsSource
from pdscaler.domain.decision import DecisionStatus
from pdscaler.domain.policy import Role, parse_policy
from pdscaler.domain.signals import PoolKey, PoolSignals, Signal, SignalName
from pdscaler.forecast.baselines import LastValue
from pdscaler.store.db import Database
from pdscaler.store.decisions import DecisionFilter, DecisionStore
from pdscaler.store.policies import PolicyStore
from tests.factories import policy_doc
from tests.kube.emulator import ApiServerEmulator

NS, POLICY = "inference", "llama"
PREFILL, DECODE = f"{POLICY}-prefill", f"{POLICY}-decode"
RETRIES = 2


@dataclass(frozen=True)
class Fault:
    name: str
    inject: Callable[[ApiServerEmulator], None]
    status: tuple[DecisionStatus, ...]  # what the faulty tick's prefill row may say
    error: str | None  # a part of its error text


FAULTS = [
    Fault("409 storm", lambda e: e.fail_next(409, times=1 + RETRIES),
          (DecisionStatus.CONFLICT,), "409"),
    Fault("429 with Retry-After", lambda e: e.fail_next(429, times=2, retry_after=1),
          (DecisionStatus.APPLIED,), None),
    Fault("500s beyond the retries", lambda e: e.fail_next(500, times=RETRIES + 3),
          (DecisionStatus.FAILED,), "500"),
    Fault("a 503 then an answer", lambda e: e.fail_next(503), (DecisionStatus.APPLIED,), None),
    Fault("connection resets", lambda e: [e.reset_next() for _ in range(RETRIES + 1)],
          (DecisionStatus.FAILED,), "Unavailable"),
    Fault("a reset then an answer", lambda e: e.reset_next(), (DecisionStatus.APPLIED,), None),
    # The answer is lost; the server makes the write late. Whichever of the late write
    # and the retry comes second is refused (it carries the old resourceVersion): the
    # row says applied or conflict, and the target changed once.
    Fault("a timeout", lambda e: e.delay_next(3.0),
          (DecisionStatus.APPLIED, DecisionStatus.CONFLICT), None),
]  # fmt: skip


@pytest.fixture
def emulator() -> Iterator[ApiServerEmulator]:
    with ApiServerEmulator() as server:
        for name in (PREFILL, DECODE):
            server.add_workload("apps/v1", "Deployment", NS, name, 2, {"app": name})
        yield server


def _controller(db: Database, emulator: ApiServerEmulator, clock: FakeClock) -> Controller:
    doc = policy_doc(name=POLICY)
    doc["spec"]["prefill"]["scaleTargetRef"]["name"] = PREFILL
    doc["spec"]["decode"]["scaleTargetRef"]["name"] = DECODE
    PolicyStore(db).create(parse_policy(doc), author="t", comment="", now=clock.now())
    metrics = FakeMetricsSource()
    metrics.set(
        PoolKey(NS, POLICY, Role.PREFILL),
        PoolSignals({SignalName.QUEUED_PREFILL_TOKENS: Signal.fresh(16_384 * 4, clock.now())}),
    )
    metrics.set(
        PoolKey(NS, POLICY, Role.DECODE),
        PoolSignals({SignalName.KV_CACHE_UTILIZATION: Signal.fresh(0.75, clock.now())}),
    )
    actuator = KubernetesActuator(emulator.transport(retries=RETRIES), clock)
    return Controller(
        policies=PolicyStore(db), decisions=DecisionStore(db), metrics=metrics,
        actuator=actuator, forecaster=LastValue(), clock=clock,
        config=ControllerConfig(interval=timedelta(seconds=15), max_sample_age_s=600),
    )  # fmt: skip


def _puts(emulator: ApiServerEmulator) -> int:
    return sum(1 for method, path, _ in emulator.requests
               if method == "PUT" and path.endswith("/scale"))  # fmt: skip


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_a_faulty_api_server_is_retried_within_bounds_audited_and_written_once(
    db: Database, emulator: ApiServerEmulator, clock: FakeClock, fault: Fault
) -> None:
    controller = _controller(db, emulator, clock)
    actuator: Any = controller._actuator  # the faults hit its writes, not its reads
    write = actuator.write_scale

    def faulty_write(*args: Any, **kwargs: Any) -> Any:
        fault.inject(emulator)
        actuator.write_scale = write  # once: the next tick meets a healthy server
        return write(*args, **kwargs)

    actuator.write_scale = faulty_write

    controller.tick()
    puts_in_faulty_tick = _puts(emulator)
    emulator.heal()  # what the faulty tick did not meet, the next one does not either
    clock.advance(timedelta(seconds=15))
    controller.tick()

    assert 1 <= puts_in_faulty_tick <= 1 + RETRIES
    page, _ = DecisionStore(db).page(DecisionFilter(role=Role.PREFILL), limit=10)
    faulty, after = page[-1].record, page[0].record
    assert faulty.status in fault.status
    assert (fault.error or "") in (faulty.error or "")
    assert after.status in (DecisionStatus.APPLIED, DecisionStatus.SKIPPED)
    assert emulator.replicas(NS, "Deployment", PREFILL) == faulty.desired_replicas
    # one change of the target's replicas in all, whatever was retried
    assert [c for c in emulator.scale_changes if c[1] == PREFILL] == [
        (NS, PREFILL, faulty.desired_replicas)
    ]

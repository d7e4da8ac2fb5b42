"""Leader election over a coordination.k8s.io/v1 Lease on the API server emulator.

Every elector has its own client of the one emulated API server; time is a FakeClock that
the tests advance by hand, and the electors' steps and the loops' ticks are called by hand
in the order a scheduler would call them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes.client import CoordinationV1Api

from pdscaler.actuator.kubernetes import KubernetesActuator
from pdscaler.actuator.leader import LeaseConfig, LeaseElector
from pdscaler.actuator.transport import Json
from pdscaler.control.clock import FakeClock
from pdscaler.control.controller import Controller, ControllerConfig
from pdscaler.control.scheduler import Loop
from pdscaler.domain.decision import DecisionStatus
from pdscaler.domain.policy import Role, ScaleTargetRef, parse_policy
from pdscaler.forecast.baselines import LastValue
from pdscaler.store.db import Database
from pdscaler.store.decisions import DecisionFilter, DecisionStore, Outcome
from tests.control.harness import Harness
from tests.factories import policy_doc
from tests.kube.emulator import ApiServerEmulator

P, D = Role.PREFILL, Role.DECODE
NS = "inference"
LEASE_NS, LEASE_NAME = "pdscaler", "pdscaler-leader"
LEASE_PATH = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases/{LEASE_NAME}"
A, B = "pdscaler-a", "pdscaler-b"
LEASE = timedelta(seconds=15)
RENEW_DEADLINE = timedelta(seconds=10)
RETRY = timedelta(seconds=2)
INTERVAL = timedelta(seconds=5)
MICRO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
TOKENS_PER_REPLICA = 16384  # the policy's QueuedPrefillTokens target
KV_TARGET = 0.75  # the policy's KVCacheUtilization target


@pytest.fixture
def emulator() -> Iterator[ApiServerEmulator]:
    with ApiServerEmulator() as server:
        yield server


def elector(emulator: ApiServerEmulator, clock: FakeClock, identity: str) -> LeaseElector:
    """One replica's elector, over its own client of the API server."""
    config = LeaseConfig(LEASE_NS, LEASE_NAME, identity)
    return LeaseElector(emulator.transport(), config, clock)


def lease_spec(emulator: ApiServerEmulator) -> Json:
    """The Lease's spec as the API server holds it."""
    spec: Json = emulator.transport().request("GET", LEASE_PATH)["spec"]
    return spec


def micro_time(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def overwrite_holder(emulator: ApiServerEmulator, holder: str) -> None:
    """Someone else writes the Lease, with the real client."""
    coordination = CoordinationV1Api(emulator.client())
    lease = coordination.read_namespaced_lease(LEASE_NAME, LEASE_NS)
    assert lease.spec is not None
    lease.spec.holder_identity = holder
    coordination.replace_namespaced_lease(LEASE_NAME, LEASE_NS, lease)


def scale_writes(emulator: ApiServerEmulator) -> list[str]:
    """The paths of every /scale write the API server received."""
    return [path for method, path, _ in emulator.requests
            if method == "PUT" and path.endswith("/scale")]  # fmt: skip


# -- the election ------------------------------------------------------------------------


def test_a_lone_elector_creates_the_lease_and_leads(
    emulator: ApiServerEmulator, clock: FakeClock
) -> None:
    a = elector(emulator, clock, A)

    leads = a.step()

    spec = lease_spec(emulator)
    assert leads
    assert a.is_leader()
    assert ("POST", LEASE_PATH.rsplit("/", 1)[0], "application/json") in emulator.requests
    assert spec["holderIdentity"] == A
    assert spec["leaseDurationSeconds"] == 15
    assert MICRO_TIME.match(spec["acquireTime"])
    assert MICRO_TIME.match(spec["renewTime"])
    assert spec["acquireTime"] == spec["renewTime"] == micro_time(clock.now())
    assert spec["leaseTransitions"] == 0
    # The real client reads what the elector wrote (MicroTime parses as a time).
    read = CoordinationV1Api(emulator.client()).read_namespaced_lease(LEASE_NAME, LEASE_NS)
    assert read.spec is not None
    assert read.spec.renew_time == clock.now()


def test_of_two_electors_one_leads_and_the_other_names_it(
    emulator: ApiServerEmulator, clock: FakeClock
) -> None:
    a, b = elector(emulator, clock, A), elector(emulator, clock, B)

    a_leads, b_leads = a.step(), b.step()

    assert (a_leads, b_leads) == (True, False)
    assert (a.is_leader(), b.is_leader()) == (True, False)
    status = b.status()
    assert (status.leading, status.holder) == (False, A)
    assert "standby" in status.message
    assert A in status.message
    assert a.status().leading


def test_a_crashed_leaders_lease_is_taken_once_it_expires(
    emulator: ApiServerEmulator, clock: FakeClock
) -> None:
    a, b = elector(emulator, clock, A), elector(emulator, clock, B)
    a.step()
    b.step()
    for _ in range(3):  # A renews at 2, 4 and 6 s; B watches
        clock.advance(RETRY)
        a.step()
        b.step()
    renewed_at = clock.now()  # A crashes after this renewal, which B saw as it was made

    b_waiting: list[bool] = []
    a_leading: dict[float, bool] = {}
    for _ in range(int(LEASE.total_seconds()) - 1):  # B looks every second
        clock.advance(1)
        b_waiting.append(b.step())
        a_leading[(clock.now() - renewed_at).total_seconds()] = a.is_leader()
    clock.advance(1)
    b_at_expiry = b.step()

    assert b_waiting == [False] * 14
    assert b_at_expiry
    assert b.is_leader()
    # A's renew deadline is 10 s after its last renewal.
    assert a_leading == {s: s <= RENEW_DEADLINE.total_seconds() for s in range(1, 15)}
    spec = lease_spec(emulator)
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == (B, 1)
    assert spec["acquireTime"] == micro_time(clock.now())


def test_the_lease_expires_from_when_the_follower_saw_it_change(
    emulator: ApiServerEmulator, clock: FakeClock
) -> None:
    a, b = elector(emulator, clock, A), elector(emulator, clock, B)
    a.step()
    b.step()  # B sees A's lease at 0 s
    clock.advance(RETRY)
    a.step()  # A renews at 2 s, then crashes; B does not look again until 10 s
    clock.advance(8)
    b.step()  # 10 s: B sees the renewal made at 2 s, and counts from now

    clock.advance(LEASE - timedelta(seconds=1))  # 24 s: 22 s after the renewal
    before = b.step()
    clock.advance(1)  # 25 s: 15 s after B saw the change
    at_expiry = b.step()

    assert (before, at_expiry) == (False, True)


def test_a_wall_clock_ahead_does_not_shorten_the_wait(emulator: ApiServerEmulator) -> None:
    clock_a = FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    clock_b = FakeClock(datetime(2026, 3, 1, 13, 0, tzinfo=UTC))  # an hour ahead of A's
    a, b = elector(emulator, clock_a, A), elector(emulator, clock_b, B)
    a.step()  # A's renewTime is an hour old by B's clock
    b.step()

    taken: list[bool] = []
    for _ in range(int(LEASE.total_seconds())):
        for clock in (clock_a, clock_b):
            clock.advance(1)
        taken.append(b.step())

    assert taken == [False] * 14 + [True]


def test_a_renewing_leader_keeps_the_lease(emulator: ApiServerEmulator, clock: FakeClock) -> None:
    a, b = elector(emulator, clock, A), elector(emulator, clock, B)

    a_steps, b_steps = [], []
    for _ in range(31):  # every 2 s for a minute
        a_steps.append(a.step())
        b_steps.append(b.step())
        clock.advance(RETRY)

    assert all(a_steps)
    assert not any(b_steps)
    assert not b.is_leader()
    spec = lease_spec(emulator)
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == (A, 0)
    assert spec["renewTime"] == micro_time(clock.now() - RETRY)


def test_a_released_lease_is_taken_at_once(emulator: ApiServerEmulator, clock: FakeClock) -> None:
    a, b = elector(emulator, clock, A), elector(emulator, clock, B)
    a.step()
    b.step()
    clock.advance(1)

    a.release()
    b_leads = b.step()

    assert not a.is_leader()
    assert b_leads
    assert b.is_leader()
    spec = lease_spec(emulator)
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == (B, 1)
    assert not a.step()  # the released lease is B's now, and A waits like anyone else


def test_confirm_reads_the_lease_again(emulator: ApiServerEmulator, clock: FakeClock) -> None:
    a = elector(emulator, clock, A)
    a.step()
    confirmed_while_held = a.confirm()

    overwrite_holder(emulator, "someone-else")

    assert confirmed_while_held
    assert a.is_leader()  # by its own reckoning, until it looks
    assert not a.confirm()


def test_a_leader_rides_out_api_errors_until_its_renew_deadline(
    emulator: ApiServerEmulator, clock: FakeClock
) -> None:
    a = elector(emulator, clock, A)
    a.step()
    renewed_at = clock.now()
    attempts = 1 + 2  # the transport's retries of one request: every step fails

    leading: dict[float, tuple[bool, bool]] = {}  # (what step() said, is_leader())
    for _ in range(6):
        clock.advance(RETRY)
        emulator.fail_next(500, times=attempts)
        stepped = a.step()
        leading[(clock.now() - renewed_at).total_seconds()] = (stepped, a.is_leader())

    assert leading == {2: (True, True), 4: (True, True), 6: (True, True), 8: (True, True),
                       10: (True, True), 12: (False, False)}  # fmt: skip
    assert "500" in a.status().message
    clock.advance(RETRY)
    assert a.step()  # the API server answers again, and the lease is still A's


# -- two pdscaler replicas, one database -------------------------------------------------


@dataclass
class Replica:
    """One pdscaler process: its own client, actuator, elector, controller and loop."""

    identity: str
    elector: LeaseElector
    decisions: DecisionStore
    loop: Loop
    tick_phase: int = 0  # its ticks fall this many seconds after the cluster's
    writes: list[datetime] = field(default_factory=list)  # when it wrote a /scale


class Crash(BaseException):
    """The replica's process dies where this is raised."""


def replica(
    identity: str,
    emulator: ApiServerEmulator,
    h: Harness,
    clock: FakeClock,
    db: Database,
    interval: timedelta,
) -> Replica:
    transport = emulator.transport()
    actuator = KubernetesActuator(transport, clock)
    lease = LeaseElector(transport, LeaseConfig(LEASE_NS, LEASE_NAME, identity), clock)
    decisions = DecisionStore(db)
    controller = Controller(
        policies=h.policies,
        decisions=decisions,
        metrics=h.metrics,
        actuator=actuator,
        forecaster=LastValue(),
        clock=clock,
        config=ControllerConfig(interval=interval, max_sample_age_s=60, identity=identity),
        leadership=lease,
    )
    loop = Loop(controller, interval, clock, lease, lease_every=RETRY)
    this = Replica(identity, lease, decisions, loop)
    write_scale = actuator.write_scale

    def recorded(
        namespace: str, target: ScaleTargetRef, replicas: int, resource_version: str | None
    ) -> str | None:
        this.writes.append(clock.now())
        return write_scale(namespace, target, replicas, resource_version)

    actuator.write_scale = recorded  # type: ignore[method-assign]
    return this


class Cluster:
    """Two replicas over one API server and one database, driven second by second as their
    schedulers would: each replica's lease job every 2 s, then its tick every interval. The
    load runs a quarter above what each pool has, so every tick grows both pools; pods
    follow ``/scale`` at once and are ready."""

    def __init__(
        self,
        db: Database,
        clock: FakeClock,
        emulator: ApiServerEmulator,
        interval: timedelta = INTERVAL,
    ) -> None:
        self.clock, self.emulator = clock, emulator
        self.start = clock.now()
        self.interval_s = int(interval.total_seconds())
        self.h = Harness(db, clock)
        pools = {"scaleTargetRef": {"name": ""}, "maxReplicas": 500}
        doc = policy_doc({"spec": {"prefill": pools, "decode": pools}})
        for role in Role:
            doc["spec"][role.value]["scaleTargetRef"]["name"] = f"llama-{role.value}"
            emulator.add_workload("apps/v1", "Deployment", NS, f"llama-{role.value}", 2,
                                  {"app": f"llama-{role.value}"})  # fmt: skip
        self.h.policies.create(parse_policy(doc), author="t", comment="", now=clock.now())
        self.pods = dict.fromkeys(Role, 0)
        self.a, self.b = (replica(i, emulator, self.h, clock, db, interval) for i in (A, B))
        self.leasing = [self.a, self.b]  # replicas whose lease job runs
        self.ticking = [self.a, self.b]  # replicas whose tick job runs

    def second(self) -> int:
        return self.seconds_since_start(self.clock.now())

    def seconds_since_start(self, at: datetime) -> int:
        return int((at - self.start).total_seconds())

    def run(self, seconds: int) -> None:
        for _ in range(seconds):
            if self.second() % int(RETRY.total_seconds()) == 0:
                for r in self.leasing:
                    r.loop.step_lease()
            for r in list(self.ticking):
                if (self.second() - r.tick_phase) % self.interval_s == 0:
                    self.load_above_capacity()
                    self._tick(r)
            self.clock.advance(1)

    def _tick(self, r: Replica) -> None:
        try:
            r.loop.run_once()
        except Crash:
            self.leasing.remove(r)
            self.ticking.remove(r)

    def load_above_capacity(self) -> None:
        replicas = {}
        for role in Role:
            name = f"llama-{role.value}"
            replicas[role] = self.emulator.replicas(NS, "Deployment", name)
            for i in range(self.pods[role], replicas[role]):
                self.emulator.add_pod(NS, f"{name}-{i}", {"app": name}, ready=True)
            self.pods[role] = max(self.pods[role], replicas[role])
        self.h.observe(P, queuedPrefillTokens=1.25 * replicas[P] * TOKENS_PER_REPLICA)
        self.h.observe(D, kvCacheUtilization=1.25 * KV_TARGET)

    def decided(self) -> list[tuple[int, str | None]]:
        """(second, leader identity) of every decision row, oldest first."""
        page, _ = self.h.decisions.page(DecisionFilter(), limit=10_000)
        return sorted(
            (self.seconds_since_start(d.record.decided_at), d.record.leader_identity) for d in page
        )

    def writes(self, r: Replica) -> list[int]:
        """The seconds at which the replica wrote a /scale, one entry a write."""
        return [self.seconds_since_start(at) for at in r.writes]


@pytest.fixture
def cluster(db: Database, clock: FakeClock, emulator: ApiServerEmulator) -> Cluster:
    return Cluster(db, clock, emulator)


@dataclass(frozen=True)
class Handover:
    name: str
    release: bool  # the leader stops cleanly: Loop.stop() gives the lease up
    keeps_ticking: bool  # only the leader's lease job stops; its tick job goes on
    acts_within: timedelta  # from the leader's stop to the other's first write
    ticks_a: tuple[int, ...]  # seconds of the ticks whose decisions each replica made
    ticks_b: tuple[int, ...]


STOP_AT = 30  # seconds after the start; A last renewed at 28 s
HANDOVERS = [
    Handover("crash", release=False, keeps_ticking=False, acts_within=LEASE + RETRY,
             ticks_a=(0, 5, 10, 15, 20, 25), ticks_b=(45, 50, 55)),
    Handover("clean stop", release=True, keeps_ticking=False, acts_within=RETRY,
             ticks_a=(0, 5, 10, 15, 20, 25), ticks_b=(30, 35, 40, 45, 50, 55)),
    # A leader whose lease job is stuck stops acting at its renew deadline (10 s after
    # 28 s), before the other can take the lease (15 s after it last saw it change).
    Handover("lease job stuck", release=False, keeps_ticking=True, acts_within=LEASE + RETRY,
             ticks_a=(0, 5, 10, 15, 20, 25, 30, 35), ticks_b=(45, 50, 55)),
]  # fmt: skip


@pytest.mark.parametrize("case", HANDOVERS, ids=lambda c: c.name)
def test_the_other_replica_takes_over_and_only_one_acts_at_a_time(
    cluster: Cluster, emulator: ApiServerEmulator, case: Handover
) -> None:
    cluster.run(STOP_AT)
    assert (cluster.a.elector.is_leader(), cluster.b.elector.is_leader()) == (True, False)
    if case.release:
        cluster.a.loop.stop()
    cluster.leasing.remove(cluster.a)
    if not case.keeps_ticking:
        cluster.ticking.remove(cluster.a)
    cluster.run(60 - STOP_AT)

    expected = [(s, A) for s in case.ticks_a] + [(s, B) for s in case.ticks_b]
    assert cluster.decided() == sorted(expected * 2)  # both pools, each tick
    writes_a, writes_b = cluster.writes(cluster.a), cluster.writes(cluster.b)
    assert writes_a == sorted(case.ticks_a * 2)  # every tick grew both pools
    assert writes_b == sorted(case.ticks_b * 2)
    assert max(writes_a) < min(writes_b)  # never two writers, not even at one tick
    assert timedelta(seconds=min(writes_b) - STOP_AT) <= case.acts_within
    assert len(scale_writes(emulator)) == len(writes_a) + len(writes_b)
    spec = lease_spec(emulator)
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == (B, 1)


def test_a_leader_that_dies_before_recording_its_writes_is_taken_over_without_a_hold(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster.run(STOP_AT)

    def dies(outcomes: list[Outcome], *, now: datetime) -> None:
        raise Crash

    # A's next tick writes /scale, then A dies before the outcomes are recorded.
    monkeypatch.setattr(cluster.a.decisions, "finish_many", dies)
    cluster.run(60 - STOP_AT)

    assert cluster.a not in cluster.ticking  # A died in its tick at 30 s
    assert cluster.writes(cluster.a)[-2:] == [30, 30]  # after writing both pools
    for role in Role:
        assert "ExternalChangeRespected" not in cluster.h.reasons(role)
    assert cluster.writes(cluster.b) == [50, 50, 55, 55]


def test_a_leader_that_lost_and_regained_the_lease_between_two_ticks_rebuilds_its_history(
    db: Database, clock: FakeClock, emulator: ApiServerEmulator
) -> None:
    cluster = Cluster(db, clock, emulator, interval=timedelta(seconds=15))
    cluster.b.tick_phase = 7  # B started 7 s after A: it ticks at 7, 22, 37 s
    cluster.run(7)  # A leads, renews at 0, 2, 4, 6 s and acts at 0 s
    cluster.leasing.remove(cluster.a)  # A's lease job stalls; its tick job goes on
    cluster.run(16)  # A acts at 15 s, steps down at 16 s; B takes over and acts at 22 s
    cluster.b.loop.stop()  # B is restarted, and gives the lease up
    cluster.leasing.remove(cluster.b)
    cluster.ticking.remove(cluster.b)
    cluster.leasing.append(cluster.a)  # A's lease job recovers: A leads again from 24 s

    cluster.run(8)

    assert cluster.writes(cluster.b) == [22, 22]
    assert cluster.a.elector.is_leader()
    for role in Role:
        assert "ExternalChangeRespected" not in cluster.h.reasons(role)
    assert cluster.writes(cluster.a) == [0, 0, 15, 15, 30, 30]


def test_a_replica_that_lost_the_lease_does_not_write(
    cluster: Cluster, emulator: ApiServerEmulator
) -> None:
    cluster.a.loop.step_lease()
    overwrite_holder(emulator, "someone-else")
    cluster.load_above_capacity()

    cluster.a.loop.run_once()  # A has not looked at the lease since: it thinks it leads

    for role in Role:
        record = cluster.h.last(role).record
        assert record.status is DecisionStatus.FAILED
        assert (record.error or "").startswith("NotLeader")
        assert record.leader_identity == A
    assert cluster.a.writes == []
    assert scale_writes(emulator) == []
    assert emulator.replicas(NS, "Deployment", "llama-prefill") == 2


def test_a_replica_on_standby_is_healthy_and_names_the_leader(cluster: Cluster) -> None:
    cluster.run(11)

    follower, leader = cluster.b.loop.health(), cluster.a.loop.health()

    assert follower.healthy
    assert "standby" in follower.message
    assert A in follower.message
    assert leader.healthy
    assert (cluster.a.loop.leading, cluster.b.loop.leading) == (True, False)

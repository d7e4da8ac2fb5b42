"""The simulated cluster run against real time, sized by the API server emulator.

:class:`ClusterFollower` plays the parts of a Deployment's controllers: before each step
it reads the replicas of each pool's Deployment and sizes the simulated pool to them (the
ReplicaSet controller), then advances the simulation to ``speed`` times the real time
elapsed, and keeps the emulator's pods in step with the simulated replicas (the kubelet):
a pending replica is a pod not ready, a ready one a ready pod, a draining one a pod being
deleted, a replica gone no pod at all. The actuator's ready and pending counts are then
those of the simulation.

:class:`KubeEmulator` adds to the API server emulator what that needs (deleting pods) and
a log of the ``/scale`` writes it accepted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from pdscaler.domain.policy import Role
from pdscaler.sim.cluster import Cluster, State
from pdscaler.sim.exporter import SimExporter
from tests.kube import objects as o
from tests.kube.emulator import Answer, ApiServerEmulator
from tests.kube.objects import Request

KIND = "Deployment"


class KubeEmulator(ApiServerEmulator):
    def __init__(self) -> None:
        super().__init__()
        self.scale_writes: list[tuple[str, int]] = []  # (workload, replicas), as accepted

    def __enter__(self) -> KubeEmulator:
        self.start()
        return self

    def handle(self, request: Request) -> Answer | None:
        answer = super().handle(request)
        if (
            answer is not None
            and answer.code == 200
            and request.method in ("PUT", "PATCH")
            and request.path.endswith("/scale")
        ):
            with self._lock:
                self.scale_writes.append(
                    (answer.body["metadata"]["name"], answer.body["spec"]["replicas"])
                )
        return answer

    def terminate_pod(self, namespace: str, name: str) -> None:
        """The pod is being deleted (its server drains): it is neither ready nor coming."""
        with self._lock:
            pod = self._pods[(namespace, name)]
            self._version += 1
            pod["metadata"]["deletionTimestamp"] = o.timestamp(datetime.now(UTC))
            pod["metadata"]["resourceVersion"] = str(self._version)

    def remove_pod(self, namespace: str, name: str) -> None:
        with self._lock:
            del self._pods[(namespace, name)]


@dataclass(frozen=True)
class Sample:
    """The Deployments' replicas that one step sized the pools to."""

    sim_s: float
    deployment: Mapping[Role, int]


class ClusterFollower:
    """Runs ``cluster`` at ``speed`` times real time in a thread, sized by ``deployments``
    (the Deployment of each pool, in ``namespace`` of ``emulator``)."""

    def __init__(
        self,
        cluster: Cluster,
        exporter: SimExporter,
        emulator: KubeEmulator,
        namespace: str,
        deployments: Mapping[Role, str],
        *,
        speed: float,
        step_s: float = 0.05,
    ) -> None:
        self.samples: list[Sample] = []
        self._cluster = cluster
        self._exporter = exporter
        self._emulator = emulator
        self._namespace = namespace
        self._deployments = dict(deployments)
        self._speed = speed
        self._step_s = step_s  # real seconds between steps
        self._pods: dict[Role, dict[str, State]] = {r: {} for r in deployments}  # as last set
        self._origin: float | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def create(self, initial: Mapping[Role, int]) -> None:
        """The Deployments, and the pods of the cluster's initial replicas."""
        for role, name in self._deployments.items():
            self._emulator.add_workload("apps/v1", KIND, self._namespace, name, initial[role],
                                        {"app": name})  # fmt: skip
        self.step(0.0)

    def sim_s(self) -> float:
        """Simulated seconds since ``start``."""
        if self._origin is None:
            return 0.0
        return (time.monotonic() - self._origin) * self._speed

    def start(self) -> None:
        self._origin = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="cluster-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop stepping; raises what the thread raised, if anything."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._error is not None:
            raise self._error

    def step(self, sim_s: float) -> None:
        """Size the pools to their Deployments, run to ``sim_s``, and update the pods."""
        cluster = self._cluster
        wanted = {role: self._emulator.replicas(self._namespace, KIND, name)
                  for role, name in self._deployments.items()}  # fmt: skip
        with self._exporter.lock:
            for role, replicas in wanted.items():
                ready, pending, _draining = cluster.counts(role)
                if replicas != ready + pending:
                    cluster.set_replicas(role, replicas)
            cluster.run_until(sim_s)
            views = {role: cluster.replicas(role) for role in self._deployments}
        for role, pool in views.items():
            self._sync_pods(role, {self._exporter.pod_name(role, r.id): r.state for r in pool})
        self.samples.append(Sample(sim_s, wanted))

    def _run(self) -> None:
        try:
            while not self._stopping.wait(self._step_s):
                self.step(self.sim_s())
        except BaseException as e:  # handed to stop(), which the test calls
            self._error = e

    def _sync_pods(self, role: Role, states: Mapping[str, State]) -> None:
        namespace, pods = self._namespace, self._pods[role]
        labels = {"app": self._deployments[role]}
        for name in [n for n in pods if n not in states]:
            self._emulator.remove_pod(namespace, name)
            del pods[name]
        for name, state in states.items():
            if pods.get(name) is state:
                continue
            if state is State.DRAINING:
                self._emulator.terminate_pod(namespace, name)
            else:
                self._emulator.add_pod(namespace, name, labels, ready=state is State.READY)
            pods[name] = state


def scale_writes(emulator: KubeEmulator, name: str) -> list[int]:
    """The replicas written to one workload's ``/scale``, in order."""
    return [replicas for workload, replicas in emulator.scale_writes if workload == name]

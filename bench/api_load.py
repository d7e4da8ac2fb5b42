"""The API under load while the control loop runs 200 policies against the simulator.

The real service (``wiring.build_runtime``'s app under uvicorn, the loop enabled, the
audit in Postgres) runs in a process of its own. Behind the loop's seams every policy has
a simulated cluster of its own (one prefill and one decode pool, a replica each to start)
replaying the bundled chat trace from its own offset at 1 to 3 requests/s, through the
simulator's ``SimMetricsSource`` and ``SimActuator``, on a real-time clock. The clusters
run in a thread of the service beside the loop, as a real cluster runs beside the
autoscaler; a tick reads and sizes them. The loop ticks every 5 s, its default.

Phase 1 lets the loop run alone; phase 2 drives the API on loopback with keep-alive
connections from one asyncio process (a read mix: decision pages, single decisions,
policies, explain, health, metrics), each sending its next request when the last is
answered. Both phases read each tick's duration from ``pdscaler_tick_duration_seconds`` at
``GET /metrics``, as an operator would: polled twice a second, a step of the count by one
is one tick and the step of the sum its duration. Prints requests/s, latency quantiles
and the tick duration with and without the load. A benchmark, not a test: it prints, it
does not judge.

    .venv/bin/python bench/api_load.py [--policies 200] [--seconds 60] [--interval 5]
    .venv/bin/python bench/api_load.py --policies 20 --seconds 5 --warmup 3   # quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import IO, Any

import httpx
import orjson
import uvicorn
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from pdscaler import wiring
from pdscaler.api.auth import token_digest
from pdscaler.config import load_settings
from pdscaler.control.clock import AcceleratedClock
from pdscaler.domain.policy import Role, ScaleTargetRef, parse_policy
from pdscaler.domain.signals import PoolKey, PoolQuery, PoolSignals, ScaleState
from pdscaler.profiles import DEFAULT_PROFILE, load_profile
from pdscaler.sim.adapters import SimActuator, SimMetricsSource, nearest_rank
from pdscaler.sim.cluster import Cluster, SimConfig
from pdscaler.sim.traces import concat, load_trace, scale_rate, window
from pdscaler.store import migrate
from pdscaler.store.db import Database, create_db_engine
from pdscaler.store.policies import PolicyStore

ADMIN_URL = os.environ.get(
    "PDSCALER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
DATABASE = "pdscaler_bench_load"
NS = "load"
TOKEN = "bench-load-viewer"
POLL_S = 0.5  # how often /metrics is read for tick durations, in both phases
# The read mix, by weight: what dashboards, operators and scripts ask of a running service.
MIX = {
    "decisions": 30,  # GET /v1/decisions?limit=100, newest first
    "decisions/policy": 10,  # the same, for one policy
    "decision": 20,  # GET /v1/decisions/{id}, a recent one
    "explain": 20,  # GET /v1/policies/{ns}/{name}/explain
    "policies": 8,  # GET /v1/policies
    "healthz": 10,
    "metrics": 2,
}


@dataclass(frozen=True)
class Options:
    policies: int = 200
    seconds: float = 60.0  # the phase under load
    idle_seconds: float | None = None  # the phase without load (None: as long)
    warmup_seconds: float = 10.0  # ticks before phase 1, not counted
    interval_s: int = 5  # the loop's default
    connections: int = 16
    wrk: bool = False  # phase 2 from wrk (one route), not the Python mix


@dataclass(frozen=True)
class Histogram:
    """One read of the tick-duration histogram, and the server's CPU seconds."""

    count: float
    sum_s: float
    buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count)
    cpu_s: float


@dataclass
class TickPhase:
    seconds: float
    first: Histogram
    last: Histogram
    durations_s: list[float] = field(default_factory=list)
    sim_tick_s: float = 0.0  # of the ticks' time, spent reading and sizing the clusters
    sim_run_s: float = 0.0  # spent running the clusters, outside the ticks

    @property
    def ticks(self) -> int:
        return int(self.last.count - self.first.count)

    def histogram_quantile(self, q: float) -> float:
        """The quantile Prometheus's histogram_quantile gives over this phase's ticks."""
        first = dict(self.first.buckets)
        deltas = [(le, n - first.get(le, 0.0)) for le, n in self.last.buckets]
        total = deltas[-1][1] if deltas else 0.0
        if total <= 0:
            return float("nan")
        lower, below = 0.0, 0.0
        for le, n in deltas:
            if n >= q * total:
                if le == float("inf"):
                    return lower
                return lower + (le - lower) * (q * total - below) / max(n - below, 1e-12)
            lower, below = le, n
        return lower


@dataclass(frozen=True)
class Sample:
    kind: str
    latency_ms: float
    status: int  # 0: no answer


@dataclass
class Result:
    options: Options
    storage: str
    idle: TickPhase
    loaded: TickPhase
    samples: list[Sample]
    load_s: float
    client_cpu_s: float
    wrk: dict[str, float] | None = None


# -- the service, in a process of its own ----------------------------------------------------


def serve(spec: Mapping[str, Any]) -> int:
    """The child: the real app and loop on simulated clusters; talks over stdin/stdout."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("apscheduler").setLevel(logging.ERROR)  # skipped ticks are counted
    settings = load_settings(
        data_dir=Path(spec["data_dir"]),
        database={"url": spec["url"]},
        api={"port": spec["port"], "cursor_secret": "c" * 32,
             "tokens": [{"name": "load", "role": "viewer", "sha256": token_digest(TOKEN)}]},
        loop={"enabled": True, "interval": timedelta(seconds=spec["interval_s"]),
              "namespaces": [NS]},
        kubernetes={"leader_election": False},
    )  # fmt: skip
    db = Database(create_db_engine(settings.database_url, pool_size=settings.database.pool_size))
    migrate.upgrade(db.engine)
    clock = AcceleratedClock(1.0)  # real time
    fleet = _fleet(db, spec["policies"], spec["trace_s"], clock)
    runtime = wiring.build_runtime(settings, db, clock, wiring.Backends(fleet, fleet))
    assert runtime.loop is not None
    config = uvicorn.Config(runtime.app, host="127.0.0.1", port=spec["port"],
                            log_level="warning", log_config=None)  # fmt: skip
    server = uvicorn.Server(config)
    api = threading.Thread(target=server.run, name="api", daemon=True)
    api.start()
    fleet.start()
    runtime.loop.start()
    _say({"ready": True})
    for line in sys.stdin:  # "stats" until "stop", or the parent is gone
        if line.strip() == "stop":
            break
        _say({"tick_s": fleet.tick_s, "run_s": fleet.run_s})
    runtime.loop.stop()
    fleet.stop()
    server.should_exit = True
    api.join(timeout=10)
    _say({"stopped": True})
    return 0


def _say(message: Mapping[str, Any]) -> None:
    print(json.dumps(message), flush=True)


class SimFleet:
    """One simulated cluster per policy behind one MetricsSource and one Actuator.

    The clusters run on in a thread of their own (``start``), as a real cluster runs
    beside the autoscaler: a tick only reads them (the signals over their windows, their
    replicas) and sizes them. ``tick_s`` counts the time the tick spends in the
    simulator, ``run_s`` the time the clusters take to run; both are CPU of the service's
    process, which the API shares.
    """

    def __init__(self, clock: AcceleratedClock, step_s: float = 0.25) -> None:
        self._clock = clock
        self._step_s = step_s  # the clusters are at most this far behind the clock
        self._sources: dict[str, SimMetricsSource] = {}  # by policy
        self._actuators: dict[str, SimActuator] = {}  # by target name
        self._clusters: list[Cluster] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._runner = threading.Thread(target=self._run, name="simulator", daemon=True)
        self.tick_s = 0.0
        self.run_s = 0.0

    def add(self, policy: str, cluster: Cluster) -> None:
        self._clusters.append(cluster)
        self._sources[policy] = SimMetricsSource(cluster, self._clock.start)
        roles = {f"{policy}-{role.value}": role for role in Role}
        self._actuators.update(dict.fromkeys(roles, SimActuator(cluster, roles)))

    def start(self) -> None:
        """Simulated time 0 is now, for the clock and every cluster; they start running."""
        self._clock.restart()
        for source in self._sources.values():
            source.epoch = self._clock.start
        self._runner.start()

    def stop(self) -> None:
        self._stopped.set()
        self._runner.join(timeout=10)

    def _run(self) -> None:
        while not self._stopped.wait(self._step_s):
            started = time.perf_counter()
            with self._lock:
                t = self._clock.elapsed_s()
                for cluster in self._clusters:
                    cluster.run_until(t)
            self.run_s += time.perf_counter() - started

    def observe(self, pools: Sequence[PoolQuery], now: datetime) -> Mapping[PoolKey, PoolSignals]:
        by_policy: dict[str, list[PoolQuery]] = defaultdict(list)
        for pool in pools:
            by_policy[pool.key.policy].append(pool)
        found: dict[PoolKey, PoolSignals] = {}
        started = time.perf_counter()
        with self._lock:
            for policy, queries in by_policy.items():
                found.update(self._sources[policy].observe(queries, now))
        self.tick_s += time.perf_counter() - started
        return found

    def pod_load(self, pool: PoolQuery, now: datetime) -> Mapping[str, float]:
        with self._lock:
            return self._sources[pool.key.policy].pod_load(pool, now)

    def read_scale(self, namespace: str, target: ScaleTargetRef) -> ScaleState:
        started = time.perf_counter()
        with self._lock:
            state = self._actuators[target.name].read_scale(namespace, target)
        self.tick_s += time.perf_counter() - started
        return state

    def write_scale(
        self, namespace: str, target: ScaleTargetRef, replicas: int, resource_version: str | None
    ) -> str | None:
        with self._lock:
            actuator = self._actuators[target.name]
            return actuator.write_scale(namespace, target, replicas, resource_version)

    def prefer_removal(
        self, namespace: str, target: ScaleTargetRef, selector: str, load: Mapping[str, float]
    ) -> int:
        return 0  # the simulator removes the least-loaded replicas itself


def _fleet(db: Database, count: int, trace_s: float, clock: AcceleratedClock) -> SimFleet:
    """``count`` policies in the store, each with a cluster of its own that replays the
    bundled trace (4.8 requests/s) from its own offset, at 0.2 to 0.6 times its rate, for
    ``trace_s``: small models' pools, and a simulation that costs the tick little."""
    base = load_trace(Path(str(files("pdscaler.sim") / "data" / "azure-conv-10min.csv")))
    span = base[-1].arrival_s
    config = SimConfig(load_profile(DEFAULT_PROFILE), cold_start_s=60.0)
    store, fleet = PolicyStore(db), SimFleet(clock)
    for i in range(count):
        name = f"model-{i:03d}"
        store.create(parse_policy(_policy(name)), author="bench", comment="", now=clock.now())
        offset = (i * 97.0) % span
        laps = [base] * (int(trace_s // span) + 1)
        trace = window(concat([window(base, offset, span + 1), *laps]), 0, trace_s)
        trace = scale_rate(trace, 0.2 + (i % 5) * 0.1)
        fleet.add(name, Cluster(config, trace, {Role.PREFILL: 1, Role.DECODE: 1}))
    return fleet


def _policy(name: str) -> dict[str, Any]:
    capacity = {"type": "Capacity", "profile": DEFAULT_PROFILE}
    down = {"scaleDown": {"stabilizationWindowSeconds": 60}}
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "slo": {"ttftMs": 300, "itlMs": 25}, "coldStartSeconds": 60,
            "prefill": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                   "name": f"{name}-prefill"},
                "minReplicas": 1, "maxReplicas": 8, "behavior": down,
                "metrics": [capacity, {"type": "TTFT", "quantile": 0.9}],
            },
            "decode": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                   "name": f"{name}-decode"},
                "minReplicas": 1, "maxReplicas": 8, "behavior": down,
                "metrics": [{"type": "KVCacheUtilization", "target": 0.7},
                            {"type": "ITL", "quantile": 0.9}, capacity],
            },
        },
    }  # fmt: skip


# -- the load and the measurements, from this process ---------------------------------------


def measure(options: Options, database_url: str = "") -> Result:
    """Start the service on ``database_url`` (empty: SQLite in a temporary directory), let
    it warm up, then run the phase without load and the phase under load."""
    idle_s = options.seconds if options.idle_seconds is None else options.idle_seconds
    with tempfile.TemporaryDirectory(prefix="pdscaler-load-") as data_dir:
        port = _free_port()
        spec = {"url": database_url, "data_dir": data_dir, "port": port,
                "policies": options.policies, "interval_s": options.interval_s,
                "trace_s": options.warmup_seconds + idle_s + options.seconds + 120}  # fmt: skip
        child = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            _hear(child)
            _wait_ready(port)
            result = asyncio.run(_phases(options, port, child, idle_s))
        finally:
            _stop(child)
    result.storage = "Postgres" if database_url.startswith("postgresql") else "SQLite"
    return result


async def _phases(
    options: Options, port: int, child: subprocess.Popen[str], idle_s: float
) -> Result:
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as watcher:
        await asyncio.sleep(options.warmup_seconds)
        sim = [_ask_simulator(child)]
        idle = await _watch(watcher, idle_s)
        sim.append(_ask_simulator(child))
        cpu = time.process_time()
        watch = _watch(watcher, options.seconds)
        if options.wrk:
            loaded, (wrk, load_s) = await asyncio.gather(watch, _wrk(base, options))
            samples: list[Sample] = []
        else:
            drive = _drive(base, headers, options)
            loaded, (samples, load_s) = await asyncio.gather(watch, drive)
            wrk = None
        client_cpu_s = time.process_time() - cpu
        sim.append(_ask_simulator(child))
    for phase, before, after in ((idle, sim[0], sim[1]), (loaded, sim[1], sim[2])):
        phase.sim_tick_s = after["tick_s"] - before["tick_s"]
        phase.sim_run_s = after["run_s"] - before["run_s"]
    return Result(options, "", idle, loaded, samples, load_s, client_cpu_s, wrk)


async def _watch(client: httpx.AsyncClient, seconds: float) -> TickPhase:
    """Each tick's duration for ``seconds``, from the histogram's count and sum."""
    first = previous = await _read_histogram(client)
    durations: list[float] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(POLL_S, left))
        current = await _read_histogram(client)
        steps = int(current.count - previous.count)
        if steps:  # two ticks between reads (rare at two reads a tick) share the step evenly
            durations += [(current.sum_s - previous.sum_s) / steps] * steps
        previous = current
    return TickPhase(seconds, first, previous, durations)


async def _read_histogram(client: httpx.AsyncClient) -> Histogram:
    response = await client.get("/metrics")
    response.raise_for_status()
    return parse_histogram(response.text)


def parse_histogram(exposition: str) -> Histogram:
    name = "pdscaler_tick_duration_seconds"
    buckets, count, sum_s, cpu_s = [], 0.0, 0.0, 0.0
    for line in exposition.splitlines():
        value = line.rpartition(" ")[2]
        if line.startswith(f"{name}_bucket{{"):
            le = re.search(r'le="([^"]+)"', line)
            if le is not None:
                buckets.append((float(le.group(1)), float(value)))
        elif line.startswith(f"{name}_count "):
            count = float(value)
        elif line.startswith(f"{name}_sum "):
            sum_s = float(value)
        elif line.startswith("process_cpu_seconds_total "):
            cpu_s = float(value)
    return Histogram(count, sum_s, tuple(sorted(buckets)), cpu_s)


async def _drive(
    base: str, headers: Mapping[str, str], options: Options
) -> tuple[list[Sample], float]:
    """``options.connections`` workers, each sending the next request as soon as the last
    one is answered (a closed loop: the service's pace sets the rate)."""
    limits = httpx.Limits(max_connections=options.connections,
                          max_keepalive_connections=options.connections)  # fmt: skip
    samples: list[Sample] = []
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits,
                                 timeout=60) as client:  # fmt: skip
        ids = _ids((await client.get("/v1/decisions", params={"limit": 100})).content)
        started = time.perf_counter()
        deadline = time.monotonic() + options.seconds
        await asyncio.gather(*(
            _worker(client, random.Random(i), deadline, options.policies, ids, samples)
            for i in range(options.connections)
        ))  # fmt: skip
        return samples, time.perf_counter() - started


async def _worker(
    client: httpx.AsyncClient,
    rng: random.Random,
    deadline: float,
    policies: int,
    ids: list[int],
    samples: list[Sample],
) -> None:
    kinds, weights = list(MIX), list(MIX.values())
    while time.monotonic() < deadline:
        kind = rng.choices(kinds, weights)[0]
        path, params = _request(kind, rng, policies, ids)
        started = time.perf_counter()
        try:
            response = await client.get(path, params=params)
            status = response.status_code
        except httpx.HTTPError:
            status = 0
        samples.append(Sample(kind, (time.perf_counter() - started) * 1000, status))
        if kind == "decisions" and status == 200 and rng.random() < 0.2:
            ids[:] = _ids(response.content) or ids  # follow the newest decisions


def _request(
    kind: str, rng: random.Random, policies: int, ids: Sequence[int]
) -> tuple[str, dict[str, str | int]]:
    policy = f"model-{rng.randrange(policies):03d}"
    requests: dict[str, tuple[str, dict[str, str | int]]] = {
        "decisions": ("/v1/decisions", {"limit": 100}),
        "decisions/policy": ("/v1/decisions", {"policy": policy, "limit": 100}),
        "decision": (f"/v1/decisions/{rng.choice(ids) if ids else 1}", {}),
        "explain": (f"/v1/policies/{NS}/{policy}/explain", {}),
        "policies": ("/v1/policies", {}),
        "healthz": ("/healthz", {}),
        "metrics": ("/metrics", {}),
    }
    return requests[kind]


def _ids(page: bytes) -> list[int]:
    return [int(item["id"]) for item in orjson.loads(page).get("items", [])]


async def _wrk(base: str, options: Options) -> tuple[dict[str, float], float]:
    """Phase 2 from wrk instead: one route, the page of 100 decisions."""
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        "wrk", "-t1", f"-c{options.connections}", f"-d{int(options.seconds)}s", "--latency",
        "-H", f"Authorization: Bearer {TOKEN}", f"{base}/v1/decisions?limit=100",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await process.communicate()
    return parse_wrk(out.decode()), time.perf_counter() - started


def parse_wrk(output: str) -> dict[str, float]:
    """wrk's summary: requests, req/s, p50/p99/max latency in ms, errors."""
    unit_ms = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}

    def ms(token: str) -> float:
        number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", token).groups()  # type: ignore[union-attr]
        return float(number) * unit_ms[unit]

    found: dict[str, float] = {"errors": 0.0}
    for line in output.splitlines():
        words = line.split()
        if words[:1] == ["Latency"] and len(words) >= 4:  # not "Latency Distribution"
            found["max_ms"] = ms(words[3])
        elif words[:1] in (["50%"], ["99%"]):
            found[f"p{words[0][:-1]}_ms"] = ms(words[1])
        elif len(words) > 2 and words[1] == "requests" and words[2] == "in":
            found["requests"] = float(words[0])
        elif line.startswith("Requests/sec:"):
            found["rps"] = float(words[1])
        elif "Non-2xx or 3xx responses:" in line:
            found["errors"] += float(words[-1])
        elif line.strip().startswith("Socket errors:"):
            found["errors"] += sum(float(n) for n in re.findall(r"\d+", line))
    return found


def _hear(child: subprocess.Popen[str]) -> dict[str, Any]:
    """The child's next message (lines that are not one are passed on to stderr)."""
    assert child.stdout is not None
    for line in child.stdout:
        if line.startswith("{"):
            message: dict[str, Any] = json.loads(line)
            return message
        sys.stderr.write(line)
    raise SystemExit(f"the service exited ({child.wait()}) before answering")


def _ask_simulator(child: subprocess.Popen[str]) -> dict[str, float]:
    """The simulator's seconds so far: in ticks, and running the clusters."""
    _tell(child.stdin, "stats")
    return {k: float(v) for k, v in _hear(child).items()}


def _tell(stream: IO[str] | None, command: str) -> None:
    assert stream is not None
    stream.write(command + "\n")
    stream.flush()


def _stop(child: subprocess.Popen[str]) -> None:
    try:
        _tell(child.stdin, "stop")
        child.wait(timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        child.kill()
        child.wait()


def _wait_ready(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("the service did not become ready")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the report --------------------------------------------------------------------------


def report(result: Result) -> str:
    o = result.options
    load = (f"wrk, {o.connections} connections, GET /v1/decisions?limit=100 only" if result.wrk
            else f"{o.connections} keep-alive connections from one asyncio process (httpx), "
                 f"read mix {', '.join(f'{k} {w}' for k, w in MIX.items())}")  # fmt: skip
    lines = [
        f"API under load: {o.policies} policies ({2 * o.policies} pools), each on its own "
        f"simulated cluster (SimMetricsSource/SimActuator, real-time clock); tick every "
        f"{o.interval_s} s; audit on {result.storage}",
        f"load: {load}; {result.load_s:.0f} s",
        "",
        f"{'request':<18}{'count':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'errors':>8}",
    ]
    if result.wrk:
        w = result.wrk
        lines.append(_row("decisions (wrk)", int(w.get("requests", 0)), w.get("rps", 0.0),
                          w.get("p50_ms"), w.get("p99_ms"), w.get("max_ms"),
                          int(w["errors"])))  # fmt: skip
    else:
        by_kind: dict[str, list[Sample]] = defaultdict(list)
        for sample in result.samples:
            by_kind[sample.kind].append(sample)
        for kind in [*MIX, "all"]:
            chosen = result.samples if kind == "all" else by_kind.get(kind, [])
            latencies = [s.latency_ms for s in chosen]
            errors = sum(1 for s in chosen if not 200 <= s.status < 300)
            lines.append(_row(kind, len(chosen), len(chosen) / result.load_s,
                              nearest_rank(latencies, 0.5), nearest_rank(latencies, 0.99),
                              max(latencies, default=None), errors))  # fmt: skip
    lines += ["", f"{'tick duration':<14}{'ticks':>7}{'median':>9}{'p99':>9}{'max':>9}"
              f"{'mean':>9}{'hist p50/p99':>15}{'of it sim':>11}{'server CPU':>12}"
              f"{'sim busy':>12}"]  # fmt: skip
    for label, phase in (("without load", result.idle), ("under load", result.loaded)):
        lines.append(_tick_row(label, phase, o.interval_s))
    lines.append(_ratio_row(result.idle, result.loaded))
    lines.append(
        "(of it sim: per tick, reading and sizing the simulated pools; server CPU: of one "
        "core; sim busy: of the wall time, the clusters running beside the loop)"
    )
    if not result.wrk:
        lines.append(f"load generator CPU: {result.client_cpu_s / result.load_s:.0%} of a core")
    return "\n".join(lines)


def _row(kind: str, count: int, rps: float, p50: float | None, p99: float | None,
         peak: float | None, errors: int) -> str:  # fmt: skip
    def f(x: float | None) -> str:
        return "-" if x is None or x != x else f"{x:.1f}"

    return f"{kind:<18}{count:>8}{rps:>9.1f}{f(p50):>9}{f(p99):>9}{f(peak):>9}{errors:>8}"


def _tick_figures(phase: TickPhase) -> tuple[float, float, float, float]:
    d = phase.durations_s
    mean = (phase.last.sum_s - phase.first.sum_s) / phase.ticks if phase.ticks else float("nan")
    return nearest_rank(d, 0.5), nearest_rank(d, 0.99), max(d, default=float("nan")), mean


def _tick_row(label: str, phase: TickPhase, interval_s: int) -> str:
    median, p99, peak, mean = _tick_figures(phase)
    hist = f"{phase.histogram_quantile(0.5) * 1e3:.0f}/{phase.histogram_quantile(0.99) * 1e3:.0f}"
    sim_ms = phase.sim_tick_s / phase.ticks * 1e3 if phase.ticks else float("nan")
    cpu = (phase.last.cpu_s - phase.first.cpu_s) / phase.seconds
    runner = phase.sim_run_s / phase.seconds
    expected = round(phase.seconds / interval_s)
    ticks = f"{phase.ticks}/{expected}"
    return (f"{label:<14}{ticks:>7}{median * 1e3:>6.0f} ms{p99 * 1e3:>6.0f} ms"
            f"{peak * 1e3:>6.0f} ms{mean * 1e3:>6.0f} ms{hist:>12} ms{sim_ms:>8.0f} ms"
            f"{cpu:>12.0%}{runner:>12.0%}")  # fmt: skip


def _ratio_row(idle: TickPhase, loaded: TickPhase) -> str:
    ratios = [b / a if a > 0 else float("nan")
              for a, b in zip(_tick_figures(idle), _tick_figures(loaded), strict=True)]  # fmt: skip
    median, p99, peak, mean = ratios
    return f"{'ratio':<14}{'':>7}{median:>8.2f}x{p99:>8.2f}x{peak:>8.2f}x{mean:>8.2f}x"


# -- the command -------------------------------------------------------------------------


def main() -> int:
    args = _args()
    if args.serve:
        return serve(json.loads(args.serve))
    use_wrk = args.wrk and shutil.which("wrk") is not None
    if args.wrk and not use_wrk:
        print("wrk is not installed: phase 2 uses the Python load generator", file=sys.stderr)
    options = Options(policies=args.policies, seconds=args.seconds, idle_seconds=args.idle,
                      warmup_seconds=args.warmup, interval_s=args.interval,
                      connections=args.connections, wrk=use_wrk)  # fmt: skip
    url = "" if args.sqlite else _fresh_database()
    try:
        print(report(measure(options, url)))
    finally:
        if url:
            _drop_database()
    return 0


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0, help="the phase under load")
    parser.add_argument("--idle", type=float, default=None,
                        help="the phase without load (default: as long as --seconds)")  # fmt: skip
    parser.add_argument("--warmup", type=float, default=10.0, help="ticks not counted")
    parser.add_argument("--interval", type=int, default=5, help="seconds between ticks")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--sqlite", action="store_true", help="audit in SQLite, not Postgres")
    parser.add_argument("--wrk", action="store_true", help="phase 2 from wrk, if installed")
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # the service's own process
    return parser.parse_args()


def _fresh_database() -> str:
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{DATABASE}"'))
    admin.dispose()
    return make_url(ADMIN_URL).set(database=DATABASE).render_as_string(hide_password=False)


def _drop_database() -> None:
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
    admin.dispose()


if __name__ == "__main__":
    sys.exit(main())

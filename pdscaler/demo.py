"""``pdscaler demo``: the real service driving a simulated prefill/decode cluster.

The API, the control loop and the SQLite audit run as in production; behind the loop's
seams is the simulator, replaying the bundled ten minutes of a public chat trace shaped
into a quiet spell, a burst and a quiet spell again, on a clock that runs ``speed`` times
faster than real time. The decisions print as they are made; the API answers at its URL
meanwhile; at the end come a summary and a plot. Ctrl-C stops it cleanly.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

from pdscaler import wiring
from pdscaler.config import Settings
from pdscaler.control.clock import AcceleratedClock
from pdscaler.domain.errors import AlreadyExists
from pdscaler.domain.policy import Policy, Role, parse_policy
from pdscaler.profiles import DEFAULT_PROFILE, load_profile
from pdscaler.sim.adapters import SimActuator, SimMetricsSource, nearest_rank
from pdscaler.sim.cluster import Cluster, SimConfig
from pdscaler.sim.traces import Request, concat, load_trace, scale_rate, window
from pdscaler.store import migrate
from pdscaler.store.db import Database
from pdscaler.store.decisions import DecisionFilter, DecisionStore, StoredDecision
from pdscaler.store.policies import PolicyStore

log = logging.getLogger(__name__)

NAMESPACE = "demo"
COLD_START_S = 60.0
TTFT_SLO_MS, ITL_SLO_MS = 300.0, 25.0
CAPACITY = {"type": "Capacity", "profile": DEFAULT_PROFILE}
SCALE_DOWN = {"scaleDown": {"stabilizationWindowSeconds": 60}}
# The policy the demo runs: Llama-3.1-8B on one H200 per replica, the bundled profile.
DEMO_POLICY: dict[str, Any] = {
    "apiVersion": "pdscaler.io/v1alpha1",
    "kind": "PDScalingPolicy",
    "metadata": {"name": "llama-8b", "namespace": NAMESPACE},
    "spec": {
        "mode": "active",
        "engine": "vllm",
        "slo": {"ttftMs": TTFT_SLO_MS, "itlMs": ITL_SLO_MS},
        "coldStartSeconds": COLD_START_S,
        "prefill": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                               "name": "llama-8b-prefill"},
            "minReplicas": 2, "maxReplicas": 32,
            "metrics": [CAPACITY, {"type": "TTFT", "quantile": 0.9}],
            "behavior": SCALE_DOWN,
        },
        "decode": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                               "name": "llama-8b-decode"},
            "minReplicas": 2, "maxReplicas": 32,
            "metrics": [{"type": "KVCacheUtilization", "target": 0.7},
                        {"type": "ITL", "quantile": 0.9}, CAPACITY],
            "behavior": SCALE_DOWN,
        },
    },
}  # fmt: skip


def demo_trace(quiet: float = 10.0, burst: float = 25.0) -> list[Request]:
    """The bundled trace as three minutes quiet, three of burst, four quiet again."""
    base = load_trace(Path(str(files("pdscaler.sim") / "data" / "azure-conv-10min.csv")))
    return concat([scale_rate(window(base, 0, 180), quiet),
                   scale_rate(window(base, 180, 360), burst),
                   scale_rate(window(base, 360, 600), quiet)])  # fmt: skip


@dataclass(frozen=True)
class DemoOptions:
    speed: float = 20.0  # simulated seconds per real second
    examples: Path | None = None  # example policies to load for the API (not run)
    serve_after: bool = False  # keep the API up after the replay, until Ctrl-C
    out: Path = Path("data")


def run_demo(settings: Settings, db: Database, options: DemoOptions, token: str | None) -> int:
    migrate.upgrade(db.engine)
    policies = PolicyStore(db)
    policy = parse_policy(DEMO_POLICY)
    clock = AcceleratedClock(options.speed)
    _load(policies, policy, options.examples, clock.now())
    trace = demo_trace()
    profile = load_profile(DEFAULT_PROFILE)
    cluster = Cluster(SimConfig(profile, cold_start_s=COLD_START_S), trace,
                      {Role.PREFILL: 3, Role.DECODE: 3})  # fmt: skip
    targets = {policy.spec.pool(role).scale_target_ref.name: role for role in Role}
    source = SimMetricsSource(cluster, clock.start, advance=True)
    backends = wiring.Backends(source, SimActuator(cluster, targets, sim_now=clock.elapsed_s))
    loop = settings.loop.model_copy(update={"enabled": True, "namespaces": [NAMESPACE]})
    kubernetes = settings.kubernetes.model_copy(update={"leader_election": False})
    settings = settings.model_copy(update={"loop": loop, "kubernetes": kubernetes})
    runtime = wiring.build_runtime(settings, db, clock, backends, pace=options.speed)
    server = _start_api(settings, runtime.app)
    base = f"http://{settings.api.host}:{settings.api.port}"
    end_s = trace[-1].arrival_s
    print(f"\npdscaler demo: {len(trace):,} requests over {end_s / 60:.0f} simulated minutes, "
          f"{options.speed:g}x real time, on {settings.database_url}")  # fmt: skip
    print(f"  API docs:   {base}/docs")
    print(f"  decisions:  curl '{base}/v1/decisions?namespace={NAMESPACE}&limit=5'")
    print(f"  explain:    curl {base}/v1/policies/{NAMESPACE}/llama-8b/explain")
    if token:
        print(f"  admin token for this run: {token}")
    print(f"\n{HEADER}")
    assert runtime.loop is not None
    for noisy in ("apscheduler", "pdscaler.control.scheduler"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    clock.restart()  # simulated time 0: now, with everything set up
    source.epoch = clock.start
    runtime.loop.start()
    printer = _Printer(DecisionStore(db))
    stopped = False
    try:
        while not (cluster.done() and clock.elapsed_s() > end_s):
            time.sleep(0.5)
            printer.print_new()
        printer.print_new()
    except KeyboardInterrupt:
        stopped = True
        print("\nstopped")
    finally:
        runtime.loop.stop()
    _summary(cluster, printer.rows, options.out, end_s)
    if options.serve_after and not stopped:
        print(f"\nthe API stays up at {base}; Ctrl-C to stop")
        try:
            while server.is_alive():
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    _stop_api(server)
    return 0


def _load(store: PolicyStore, policy: Policy, examples: Path | None, now: datetime) -> None:
    from pdscaler.store.files import read_policies

    store.apply(policy, author="demo", comment="the demo's policy", now=now)
    for item in read_policies(examples) if examples else ():
        if item.policy is None:
            log.warning("skipping %s: %s", item.where, item.errors[0].message)
            continue
        # Examples are for browsing the API; the demo's loop does not run them.
        with contextlib.suppress(AlreadyExists):
            store.create(item.policy, author="demo", comment="example", now=now)


HEADER = (f"{'time':>6}  {'req/s':>6}  {'prefill':<22}  {'decode':<22}  "
          f"{'TTFT p90':>9}  {'ITL p90':>8}")  # fmt: skip


class _Printer:
    """Prints each tick's pair of decisions once, as they reach the audit log."""

    def __init__(self, decisions: DecisionStore) -> None:
        self._decisions = decisions
        self._seen: set[int] = set()
        self._start: datetime | None = None
        self.rows: list[tuple[float, dict[Role, StoredDecision]]] = []

    def print_new(self) -> None:
        page, _ = self._decisions.page(DecisionFilter(namespace=NAMESPACE), limit=40)
        ticks: dict[str, dict[Role, StoredDecision]] = {}
        for decision in sorted(page, key=lambda d: d.id):
            if decision.id not in self._seen:
                ticks.setdefault(decision.record.tick_id, {})[decision.record.role] = decision
        for pair in ticks.values():
            if len(pair) < 2:
                continue  # the other row of this tick is not in yet
            self._seen.update(d.id for d in pair.values())
            at = pair[Role.PREFILL].record.decided_at
            self._start = self._start or at
            t = (at - self._start).total_seconds()
            self.rows.append((t, pair))
            print(_line(t, pair), flush=True)


def _line(t: float, pair: dict[Role, StoredDecision]) -> str:
    prefill, decode = pair[Role.PREFILL].record, pair[Role.DECODE].record
    rate = _signal(prefill.signals, "arrivalRate")
    ttft, itl = _signal(prefill.signals, "ttftMs"), _signal(decode.signals, "itlMs")
    return (f"{int(t // 60):>3}:{int(t % 60):02d}  {rate:>6.0f}  {_pool(prefill):<22}  "
            f"{_pool(decode):<22}  {_ms(ttft):>9}  {_ms(itl):>8}")  # fmt: skip


def _pool(record: Any) -> str:
    current, desired = record.current_replicas, record.desired_replicas
    reason = record.steps[-1].reason if record.steps else ""
    change = f"{current}" if desired in (None, current) else f"{current}->{desired}"
    return f"{change:>6} {reason[:15]}"


def _signal(signals: Mapping[str, Any] | None, name: str) -> float:
    value = (signals or {}).get(name, {}).get("value")
    return float(value) if isinstance(value, int | float) else math.nan


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f} ms"


def _summary(
    cluster: Cluster, rows: list[tuple[float, dict[Role, StoredDecision]]], out: Path, end_s: float
) -> None:
    done = cluster.finished
    if not done:
        print("no request finished")
        return
    ttft = [o.ttft_s * 1000 for o in done]
    itl = [o.tpot_s * 1000 for o in done]
    met = sum(1 for o in done if o.ttft_s * 1000 <= TTFT_SLO_MS and o.tpot_s * 1000 <= ITL_SLO_MS)
    gpu_h = {role: cluster.gpu_seconds(role) / 3600 for role in Role}
    print(f"\n{len(done):,} of {len(cluster.outcomes):,} requests finished "
          f"({len(cluster.outcomes) - len(done):,} still running)")  # fmt: skip
    print(f"  SLO attainment (TTFT <= {TTFT_SLO_MS:g} ms and ITL <= {ITL_SLO_MS:g} ms): "
          f"{met / len(done):.1%}")  # fmt: skip
    q = nearest_rank
    print(f"  TTFT p50 {q(ttft, 0.5):.0f} ms, p99 {q(ttft, 0.99):.0f} ms;  "
          f"ITL p50 {q(itl, 0.5):.1f} ms, p99 {q(itl, 0.99):.1f} ms")  # fmt: skip
    print(f"  GPU-hours: prefill {gpu_h[Role.PREFILL]:.2f}, decode {gpu_h[Role.DECODE]:.2f}")
    plot = _plot(cluster, rows, out, end_s)
    if plot is not None:
        print(f"  plot: {plot}")


def _plot(
    cluster: Cluster, rows: list[tuple[float, dict[Role, StoredDecision]]], out: Path, end_s: float
) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    bins = max(1, int(end_s // 10) + 1)
    load = [0] * bins
    for outcome in cluster.outcomes:
        load[min(bins - 1, int(outcome.request.arrival_s // 10))] += 1
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 5))
    top.plot([i * 10 / 60 for i in range(bins)], [n / 10 for n in load], color="gray")
    top.set_ylabel("offered req/s")
    for role in Role:
        times = [t / 60 for t, _ in rows]
        sizes = [pair[role].record.current_replicas or 0 for _, pair in rows]
        bottom.step(times, sizes, where="post", label=role.value)
    bottom.set_ylabel("replicas")
    bottom.set_xlabel("simulated minutes")
    bottom.legend()
    top.set_title("pdscaler demo: offered load and pool sizes")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "demo.png"
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


class _Api(threading.Thread):
    def __init__(self, settings: Settings, app: Any) -> None:
        super().__init__(name="api", daemon=True)
        import uvicorn

        # log_config=None: uvicorn logs through the root handler, secrets redacted
        config = uvicorn.Config(app, host=settings.api.host, port=settings.api.port,
                                log_level="warning", log_config=None)  # fmt: skip
        self.server = uvicorn.Server(config)

    def run(self) -> None:
        self.server.run()


def _start_api(settings: Settings, app: Any) -> _Api:
    api = _Api(settings, app)
    api.start()
    return api


def _stop_api(api: _Api) -> None:
    api.server.should_exit = True
    api.join(timeout=5)

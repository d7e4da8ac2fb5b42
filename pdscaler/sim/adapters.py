"""The simulated cluster behind the controller's own seams.

:class:`SimMetricsSource` answers ``MetricsSource.observe`` from the cluster's state, as
Prometheus would from the engines' metrics: rates and lengths over a window, the queue
and the running batch now, the KV cache use, and the TTFT and ITL quantiles of the
requests that got their first token (or finished) within the window. :class:`SimActuator`
answers ``Actuator``: ``/scale`` is the pool's replicas asked for (ready and pending),
written with the same optimistic concurrency as the API server. The very same controller
and engine then run against the simulator, on the simulated clock.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

from pdscaler.domain.errors import Conflict, NotFound
from pdscaler.domain.policy import Role, ScaleTargetRef
from pdscaler.domain.signals import PoolKey, PoolQuery, PoolSignals, ScaleState, Signal
from pdscaler.domain.signals import SignalName as S
from pdscaler.sim.cluster import Cluster, Outcome


class SimMetricsSource:
    """``advance``: each observation first runs the cluster up to ``now`` (the simulation
    then moves with the clock the loop runs on, as in the live demo)."""

    def __init__(
        self, cluster: Cluster, epoch: datetime, window_s: float = 60.0, *, advance: bool = False
    ) -> None:
        self._cluster = cluster
        self.epoch = epoch
        self._window_s = window_s
        self._advance = advance
        self._generated: deque[tuple[float, float]] = deque()  # (t, tokens generated so far)

    def observe(self, pools: Sequence[PoolQuery], now: datetime) -> Mapping[PoolKey, PoolSignals]:
        t = (now - self.epoch).total_seconds()
        if self._advance:
            self._cluster.run_until(t)
        self._generated.append((t, self._cluster.generated_tokens()))
        while len(self._generated) > 2 and self._generated[1][0] <= t - self._window_s:
            self._generated.popleft()
        return {pool.key: self._signals(pool, t, now) for pool in pools}

    def pod_load(self, pool: PoolQuery, now: datetime) -> Mapping[str, float]:
        return self._cluster.pod_load(pool.key.role)

    def _signals(self, pool: PoolQuery, t: float, now: datetime) -> PoolSignals:
        """What a vLLM server of the pool reports, summed or averaged over the pool.

        A prefill server is sent each request with one token to generate (as PD proxies
        do): it counts the request as done when it has prefilled it, and its TTFT ends
        there. A decode server counts a request when it finishes, its TTFT ends when the
        sequence joins its batch, and its generated tokens count as they are produced.
        """
        cluster, role = self._cluster, pool.key.role
        since = t - min(self._window_s, max(t, 1e-9))
        span = max(t - since, 1e-9)
        if role is Role.PREFILL:
            done = _between(cluster.prefilled, since, t, lambda o: o.prefilled_s)
            ttfts = [(o.prefilled_s - o.request.arrival_s) * 1000 for o in done]
            outputs = [1] * len(done)
            itl_ms = math.nan  # a prefill server generates one token: no gaps to time
            generated = float(len(done))
        else:
            done = _between(cluster.finished, since, t, lambda o: o.done_s)
            joined = _between(cluster.first_tokens, since, t, lambda o: o.first_token_s)
            ttfts = [o.ttft_s * 1000 for o in joined]
            outputs = [o.request.output_tokens for o in done]
            samples = cluster.itl_samples
            start = bisect_right(samples, since, key=lambda x: x[0])
            if start:  # observations only move forward: forget what has left the window
                del samples[:start]
                start = 0
            end = bisect_right(samples, t, key=lambda x: x[0])
            itl_ms = _weightednearest_rank(
                [(itl * 1000, tokens) for _, itl, tokens in samples[start:end]], pool.itl_quantile
            )
            (t0, g0), (t1, g1) = self._generated[0], self._generated[-1]
            generated = (g1 - g0) / (t1 - t0) * span if t1 > t0 else float(sum(outputs))
        inputs = [o.request.input_tokens for o in done]
        queued, queued_tokens = cluster.queued(role)
        values = {
            S.ARRIVAL_RATE: len(done) / span,
            S.INPUT_TOKEN_RATE: sum(inputs) / span,
            S.OUTPUT_TOKEN_RATE: generated / span,
            S.MEAN_INPUT_LENGTH: sum(inputs) / len(inputs) if inputs else 0.0,
            S.P90_INPUT_LENGTH: nearest_rank(inputs, 0.9),
            S.MEAN_OUTPUT_LENGTH: sum(outputs) / len(outputs) if outputs else 0.0,
            S.P90_OUTPUT_LENGTH: nearest_rank(outputs, 0.9),
            S.QUEUED_REQUESTS: float(queued),
            S.QUEUED_PREFILL_TOKENS: float(queued_tokens) if role is Role.PREFILL else 0.0,
            S.RUNNING_REQUESTS: float(cluster.running(role)),
            S.KV_CACHE_UTILIZATION: cluster.kv_utilization() if role is Role.DECODE else 0.0,
            S.TTFT_MS: nearest_rank(ttfts, pool.ttft_quantile),
            S.ITL_MS: itl_ms,
        }
        return PoolSignals({name: Signal.fresh(v, now) for name, v in values.items()})


class SimActuator:
    """``/scale`` of the simulated pools: one target per role, whatever its name."""

    def __init__(
        self,
        cluster: Cluster,
        roles: Mapping[str, Role],
        sim_now: Callable[[], float] | None = None,
    ) -> None:
        """``sim_now``: the simulated time to run the cluster up to before each read."""
        self._cluster = cluster
        self._roles = dict(roles)  # target name -> the pool it sizes
        self._sim_now = sim_now
        self._versions = dict.fromkeys(Role, 1)
        self.writes = 0

    def read_scale(self, namespace: str, target: ScaleTargetRef) -> ScaleState:
        role = self._roles.get(target.name)
        if role is None:
            raise NotFound(f"{namespace}/{target.name} is not a simulated pool")
        if self._sim_now is not None:
            self._cluster.run_until(self._sim_now())
        ready, pending, _draining = self._cluster.counts(role)
        return ScaleState(ready + pending, ready, pending, str(self._versions[role]))

    def write_scale(
        self, namespace: str, target: ScaleTargetRef, replicas: int, resource_version: str | None
    ) -> str | None:
        role = self._roles[target.name]
        if resource_version is not None and resource_version != str(self._versions[role]):
            raise Conflict(f"{target.name} changed since it was read")
        self._cluster.set_replicas(role, replicas)
        self._versions[role] += 1
        self.writes += 1
        return str(self._versions[role])

    def prefer_removal(
        self, namespace: str, target: ScaleTargetRef, selector: str, load: Mapping[str, float]
    ) -> int:
        return 0  # the simulator removes the least-loaded replicas itself


def sim_time(epoch: datetime, t: float) -> datetime:
    return epoch + timedelta(seconds=t)


def _between(
    items: list[Outcome], since: float, until: float, at: Callable[[Outcome], float]
) -> list[Outcome]:
    """The items (kept in order of ``at``) with ``since`` < at <= ``until``."""
    return items[bisect_right(items, since, key=at) : bisect_right(items, until, key=at)]


def _weightednearest_rank(values: Sequence[tuple[float, float]], q: float) -> float:
    """The ``q`` quantile of values each counted ``weight`` times; NaN with none."""
    total = sum(w for _, w in values)
    if total <= 0:
        return math.nan
    seen = 0.0
    for value, weight in sorted(values):
        seen += weight
        if seen >= q * total:
            return value
    return max(v for v, _ in values)


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile by nearest rank (the smallest value with at least ``q`` of the
    values at or below it); NaN with no values, as Prometheus answers."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))])

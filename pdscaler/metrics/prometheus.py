"""The Prometheus metrics source: a constant number of PromQL queries per tick.

Pools that share an engine preset and the same selector label keys are read together:
one query per signal answers for all of them (``sum by (namespace, <keys>)``), and the
answer is split by those labels. The number of HTTP requests per tick therefore depends
on the presets and selector shapes in use, never on the number of pools.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException

from pdscaler.domain.errors import FieldError, Unavailable
from pdscaler.domain.policy import Policy, Role
from pdscaler.domain.signals import PoolKey, PoolQuery, PoolSignals, Quality, Signal, SignalName
from pdscaler.metrics.grading import Series, grade
from pdscaler.metrics.presets import ABSENT, ENGINES, Preset, load_preset, render

log = logging.getLogger(__name__)
LATENCY = {SignalName.TTFT_MS: "ttft_quantile", SignalName.ITL_MS: "itl_quantile"}
# Prometheus refuses a range query of more than 11,000 points per series.
MAX_POINTS = 10_000


@dataclass(frozen=True)
class SourceConfig:
    rate_window_s: int = 60
    stale_after_s: float = 30.0
    timeout_s: float = 5.0
    concurrency: int = 4
    probe_interval_s: float = 300.0
    reprobe_missing_s: float = 10.0  # while a family is missing, look again this often


@dataclass(frozen=True)
class _Group:
    """Pools read by the same queries: one preset (or one custom template), one label shape."""

    engine: str
    keys: tuple[str, ...]  # selector labels besides namespace, sorted
    template: str = ""  # custom engine: the template; presets: empty


@dataclass
class _Job:
    group: _Group
    signal: SignalName | None  # None: the freshness query
    query: str
    pools: list[PoolQuery] = field(default_factory=list)


class PrometheusSource:
    def __init__(self, client: PrometheusConnect, config: SourceConfig | None = None) -> None:
        self._client = client
        self._config = config or SourceConfig()
        self._names: frozenset[str] | None = None
        self._probe_error = "not tried yet"  # why the names are not known (while None)
        self._probed_at = 0.0
        self._lock = threading.Lock()
        self._window = f"{self._config.rate_window_s}s"
        self.requests = 0
        client._session.hooks["response"].append(self._count)

    def _count(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.requests += 1

    # -- alias probing -------------------------------------------------------------------

    def probe(self) -> None:
        """Learn which of the presets' metric names have current series.

        One instant query over every name of every preset: a name counts only while it
        has samples, so that a renamed metric (whose old series went stale) is seen as
        renamed, not as present.
        """
        names = sorted({n for e in ENGINES for f in load_preset(e).families.values()
                        for n in f.candidates})  # fmt: skip
        # A histogram has no series of its own name: its _count stands for it.
        query = f'count by (__name__) ({{__name__=~"({_alternatives(names)})(_count)?"}})'
        answer = self._client.custom_query(query, timeout=self._config.timeout_s)
        found = {s["metric"]["__name__"] for s in answer}
        with self._lock:
            self._names = frozenset(found | {n.removesuffix("_count") for n in found})
            self._probed_at = time.monotonic()

    def chosen(self, preset: Preset) -> dict[str, str | None]:
        """For each family of ``preset``, the name found in Prometheus (None: absent)."""
        self._probe_if_due()
        chosen = self._choose(preset)
        if any(name is None for name in chosen.values()):
            self._probe_if_due(missing=True)
            chosen = self._choose(preset)
        return chosen

    def _choose(self, preset: Preset) -> dict[str, str | None]:
        names = self._names or frozenset()
        chosen: dict[str, str | None] = {}
        for key, family in preset.families.items():
            found = next((n for n in family.candidates if n in names), None)
            chosen[key] = found if found or not family.optional else ABSENT
        return chosen

    def problems(self, engines: Iterable[str]) -> list[str]:
        """Families that no alias could be found for, per preset in use, as last probed.

        Asks Prometheus nothing (readiness must not wait on it): before the first probe the
        answer is that nothing is known yet.
        """
        if self._names is None:
            return ["metric names not probed yet (Prometheus not reached so far)"]
        problems = []
        for engine in sorted(set(engines)):
            if engine not in ENGINES:
                problems.append(f"{engine}: no metric preset; use engine dynamo or custom")
                continue
            preset = load_preset(engine)
            missing = [
                f"{key} (tried {', '.join(preset.families[key].candidates)})"
                for key, name in self._choose(preset).items()
                if name is None
            ]
            if missing:
                problems.append(f"{engine}: no series for {'; '.join(missing)}")
        return problems

    def _probe_if_due(self, missing: bool = False) -> None:
        """Probe when due, or sooner while a family is missing (it may be on its way).

        A failed probe keeps the last answer (or, before any, none).
        """
        age = time.monotonic() - self._probed_at
        interval = self._config.reprobe_missing_s if missing else self._config.probe_interval_s
        if self._names is not None and age <= interval:
            return
        try:
            self.probe()
        except (requests.RequestException, PrometheusApiClientException, ValueError) as e:
            self._probe_error = _short(e)
            log.warning("probing metric names failed: %s", self._probe_error)

    def check_queries(self, policy: Policy) -> list[FieldError]:
        """Run a custom-engine policy's queries once: Prometheus must accept each, and
        what it answers must carry the labels that tell the pools apart.

        Raises Unavailable when Prometheus cannot be asked, so that nothing unchecked is
        saved.
        """
        pools = [_with_default_selector(PoolQuery.of(policy, role)) for role in Role]
        errors = []
        for signal, template in (policy.spec.queries or {}).items():
            field_name = f"spec.queries.{signal}"
            group = _Group("custom", tuple(sorted(pools[0].selector)), template)
            try:
                answer = self._client.custom_query(
                    render(template, _values(group, pools, self._window)),
                    timeout=self._config.timeout_s,
                )
            except KeyError as e:
                errors.append(FieldError(field_name, f"unknown placeholder: {e}"))
                continue
            except PrometheusApiClientException as e:
                if not re.search(r"HTTP Status Code (400|422)\b", str(e)):
                    raise Unavailable(f"cannot check the custom queries: {_short(e)}") from e
                errors.append(FieldError(field_name, f"Prometheus refuses it: {_short(e)}"))
                continue
            except requests.RequestException as e:
                raise Unavailable(f"cannot check the custom queries: {_short(e)}") from e
            wanted = {"namespace", *group.keys}
            for series in answer[:1]:
                missing = wanted - series.get("metric", {}).keys()
                if missing:
                    errors.append(FieldError(
                        field_name, f"its answer lacks the pool labels {sorted(missing)}: "
                        "keep them in by ({{by}})"))  # fmt: skip
        return errors

    # -- observation -----------------------------------------------------------------------

    def observe(self, pools: Sequence[PoolQuery], now: datetime) -> Mapping[PoolKey, PoolSignals]:
        """Every pool's signals at ``now``, from a fixed set of batched queries."""
        jobs, absent = self._jobs(pools)
        answers = self._run(jobs)
        signals: dict[PoolKey, dict[SignalName, Signal]] = {
            p.key: dict(absent.get(p.key, {})) for p in pools
        }
        freshness = self._freshness(jobs, answers)
        for job in jobs:
            if job.signal is None:
                continue
            for key, signal in self._grade(job, answers[id(job)], freshness, now).items():
                signals[key][job.signal] = signal
        return {key: PoolSignals(values) for key, values in signals.items()}

    def pod_load(self, pool: PoolQuery, now: datetime) -> Mapping[str, float]:
        """Running requests per pod of one pool, for choosing which pods a scale-down
        removes. Empty when the preset has no per-server running gauge or Prometheus
        cannot answer: no pod is then preferred."""
        pool = _with_default_selector(pool)
        if pool.queries or pool.engine.value not in ENGINES:
            return {}
        name = self.chosen(load_preset(pool.engine.value)).get("running")
        if name is None:
            return {}
        sel = _values(_Group(pool.engine.value, tuple(sorted(pool.selector))), [pool], "")["sel"]
        try:
            result = self._client.custom_query(
                f"sum by (pod) ({name}{sel})", timeout=self._config.timeout_s
            )
        except (requests.RequestException, PrometheusApiClientException, ValueError) as e:
            log.warning("running requests per pod of %s: %s", pool.key, _short(e))
            return {}
        load = {}
        for series in result:
            pod, value = series.get("metric", {}).get("pod"), float(series["value"][1])
            if pod and math.isfinite(value):
                load[pod] = value
        return load

    def history(
        self,
        pools: Sequence[PoolQuery],
        signal: SignalName,
        start: datetime,
        end: datetime,
        step_s: int = 60,
        max_points: int = MAX_POINTS,
    ) -> dict[PoolKey, list[tuple[datetime, float]]]:
        """The past of one signal for every pool, for forecast training.

        One range query per group of pools (as :meth:`observe`), cut into chunks of at most
        ``max_points`` points each. NaN and Inf points are left out.
        """
        jobs, _absent = self._jobs(pools)
        series: dict[PoolKey, list[tuple[datetime, float]]] = {p.key: [] for p in pools}
        for job in (j for j in jobs if j.signal is signal):
            for chunk_start, chunk_end in _chunks(start, end, step_s, max_points):
                result = self._client.custom_query_range(
                    job.query, chunk_start, chunk_end, f"{step_s}s",
                    timeout=self._config.timeout_s,
                )  # fmt: skip
                split = _split(job.group, result)
                for pool in job.pools:
                    for found in split.get(_identity(job.group, pool), [])[:1]:
                        series[pool.key] += [
                            (datetime.fromtimestamp(float(t), UTC), float(v))
                            for t, v in found["values"]
                            if math.isfinite(float(v))
                        ]
        return series

    def _jobs(
        self, pools: Sequence[PoolQuery]
    ) -> tuple[list[_Job], dict[PoolKey, dict[SignalName, Signal]]]:
        pools = [_with_default_selector(p) for p in pools]
        groups: dict[_Group, list[PoolQuery]] = defaultdict(list)
        absent: dict[PoolKey, dict[SignalName, Signal]] = defaultdict(dict)
        custom: dict[tuple[_Group, SignalName], list[PoolQuery]] = defaultdict(list)
        for pool in pools:
            keys = tuple(sorted(pool.selector))
            if pool.queries:
                for signal, template in pool.queries.items():
                    group = _Group("custom", keys, template)
                    custom[(group, SignalName(signal))].append(pool)
            elif pool.engine.value in ENGINES:
                groups[_Group(pool.engine.value, keys)].append(pool)
            else:
                detail = (f"no metric preset for engine {pool.engine.value}: use engine dynamo "
                          "(TensorRT-LLM behind Dynamo) or custom")  # fmt: skip
                absent[pool.key] = {s: Signal.missing(Quality.ERROR, detail) for s in SignalName}
        jobs: list[_Job] = []
        for group, members in groups.items():
            jobs += self._preset_jobs(group, members, absent)
        for (group, signal), members in custom.items():
            jobs += self._custom_jobs(group, signal, members, absent)
        if pools:
            jobs += self._gpu_job(pools)
        # Pools of the custom engine and those of presets with the same key shape do not
        # mix: their groups differ in engine or template.
        return jobs, absent

    def _custom_jobs(
        self,
        group: _Group,
        signal: SignalName,
        members: list[PoolQuery],
        absent: dict[PoolKey, dict[SignalName, Signal]],
    ) -> list[_Job]:
        values = _values(group, members, self._window)
        jobs = []
        for quantile, pools in _by_quantile(members, signal).items():
            try:
                query = render(group.template, {**values, "q": quantile})
            except KeyError as e:  # a placeholder pdscaler does not fill: these pools only
                for pool in pools:
                    absent[pool.key][signal] = Signal.missing(Quality.ERROR, f"template: {e}")
                continue
            jobs.append(_Job(group, signal, query, pools))
        return jobs

    def _preset_jobs(
        self,
        group: _Group,
        members: list[PoolQuery],
        absent: dict[PoolKey, dict[SignalName, Signal]],
    ) -> list[_Job]:
        preset = load_preset(group.engine)
        names = self.chosen(preset)
        values = _values(group, members, self._window)
        jobs = []
        if preset.freshness and names.get(preset.freshness):
            fresh = f"max by ({values['by']}) (timestamp({names[preset.freshness]}{values['sel']}))"
            jobs.append(_Job(group, None, fresh, members))
        for signal, query in preset.signals.items():
            missing = sorted(f for f in query.families if names.get(f) is None)
            if missing and self._names is None:  # never reached: not known to be missing
                detail = f"Prometheus not reached to find metric names: {self._probe_error}"
                for pool in members:
                    absent[pool.key][signal] = Signal.missing(Quality.ERROR, detail)
                continue
            if missing:
                detail = f"metric family missing from Prometheus: {', '.join(missing)}"
                for pool in members:
                    absent[pool.key][signal] = Signal.missing(Quality.EMPTY, detail)
                continue
            filled = {**values, **{f: n for f, n in names.items() if n}}
            by_quantile = _by_quantile(members, signal)
            for quantile, pools in by_quantile.items():
                jobs.append(
                    _Job(group, signal, render(query.template, {**filled, "q": quantile}), pools)
                )
        return jobs

    def _gpu_job(self, pools: Sequence[PoolQuery]) -> list[_Job]:
        preset = load_preset("dcgm")
        name = self.chosen(preset).get("util")
        if name is None:
            return []
        namespaces = _alternatives(sorted({p.key.namespace for p in pools}))
        query = render(
            preset.signals[SignalName.GPU_UTILIZATION].template,
            {"util": name, "namespaces": namespaces},
        )
        return [_Job(_Group("dcgm", ("pod",)), SignalName.GPU_UTILIZATION, query, list(pools))]

    def _run(self, jobs: list[_Job]) -> dict[int, list[Series] | str]:
        def ask(job: _Job) -> tuple[int, list[Series] | str]:
            try:
                result = self._client.custom_query(job.query, timeout=self._config.timeout_s)
                return id(job), list(result)
            except (requests.RequestException, PrometheusApiClientException, ValueError) as e:
                log.warning("query failed: %s: %s", job.query[:200], e)
                return id(job), f"query failed: {_short(e)}"

        workers = max(1, min(self._config.concurrency, len(jobs)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return dict(pool.map(ask, jobs))

    def _freshness(
        self, jobs: list[_Job], answers: Mapping[int, list[Series] | str]
    ) -> dict[PoolKey, datetime]:
        newest: dict[PoolKey, datetime] = {}
        for job in jobs:
            answer = answers[id(job)]
            if job.signal is not None or isinstance(answer, str):
                continue
            split = _split(job.group, answer)
            for pool in job.pools:
                found = split.get(_identity(job.group, pool), [])
                if len(found) == 1:
                    newest[pool.key] = datetime.fromtimestamp(float(found[0]["value"][1]), UTC)
        return newest

    def _grade(
        self,
        job: _Job,
        answer: list[Series] | str,
        freshness: Mapping[PoolKey, datetime],
        now: datetime,
    ) -> dict[PoolKey, Signal]:
        """Each pool's signal from one answer, split by pool once."""
        if isinstance(answer, str):
            failed = Signal.missing(Quality.ERROR, answer)
            return {pool.key: failed for pool in job.pools}
        if job.signal is SignalName.GPU_UTILIZATION:
            return _gpu(job.pools, answer, now)
        split = _split(job.group, answer)
        stale_after_s = self._config.stale_after_s
        return {
            pool.key: grade(split.get(_identity(job.group, pool), []), freshness.get(pool.key),
                            now, stale_after_s)
            for pool in job.pools
        }  # fmt: skip


def _with_default_selector(pool: PoolQuery) -> PoolQuery:
    """A preset pool is told apart by its preset's role label, and by the labels the
    policy adds (``metricsSelector``, which may also override the role label)."""
    if pool.queries or pool.engine.value not in ENGINES:
        return pool
    role_label = load_preset(pool.engine.value).role_label
    if role_label is None:
        return pool
    return replace(pool, selector={role_label: pool.key.role.value, **pool.selector})


def _chunks(
    start: datetime, end: datetime, step_s: int, max_points: int
) -> list[tuple[datetime, datetime]]:
    span = timedelta(seconds=step_s * max_points)
    chunks = []
    while start < end:
        chunks.append((start, min(end, start + span)))
        start = chunks[-1][1] + timedelta(seconds=step_s)
    return chunks


def _values(group: _Group, pools: Sequence[PoolQuery], window: str) -> dict[str, str]:
    """The selector, matchers and grouping labels that cover every pool of a group."""
    labels = ("namespace", *group.keys)
    namespaces = _alternatives(sorted({p.key.namespace for p in pools}))
    matchers = [f'namespace=~"{namespaces}"']
    for key in group.keys:
        matchers.append(f'{key}=~"{_alternatives(sorted({p.selector[key] for p in pools}))}"')
    match = ",".join(matchers)
    return {
        "sel": "{" + match + "}",
        "match": match,
        "by": ",".join(labels),
        "w": window,
        "q": "0.9",
        "namespaces": namespaces,
    }


def _by_quantile(pools: Sequence[PoolQuery], signal: SignalName) -> dict[str, list[PoolQuery]]:
    attribute = LATENCY.get(signal)
    grouped: dict[str, list[PoolQuery]] = defaultdict(list)
    for pool in pools:
        quantile = getattr(pool, attribute) if attribute else 0.9
        grouped[f"{quantile:g}"].append(pool)
    return grouped


def _identity(group: _Group, pool: PoolQuery) -> tuple[str, ...]:
    return (pool.key.namespace, *(pool.selector[k] for k in group.keys))


def _split(group: _Group, answer: Sequence[Series]) -> dict[tuple[str, ...], list[Series]]:
    split: dict[tuple[str, ...], list[Series]] = defaultdict(list)
    for series in answer:
        labels = series.get("metric", {})
        split[(labels.get("namespace", ""), *(labels.get(k, "") for k in group.keys))].append(
            series
        )
    return split


def _gpu(
    pools: Sequence[PoolQuery], answer: Sequence[Series], now: datetime
) -> dict[PoolKey, Signal]:
    """GPU utilisation of the pods named after each pool's scale target, averaged.

    Pods are named "<target>-<suffix>" with up to two suffixes (Deployment: hash and id;
    StatefulSet: ordinal; LeaderWorkerSet: group and index), so each series is matched by
    stripping suffixes and looking the rest up, not by comparing every pod with every pool.
    """
    by_target = {(p.key.namespace, p.pool.scale_target_ref.name): p.key for p in pools}
    values: dict[PoolKey, list[float]] = defaultdict(list)
    for series in answer:
        namespace, pod = series["metric"].get("namespace", ""), series["metric"].get("pod", "")
        parts = pod.split("-")
        for cut in (1, 2):
            key = by_target.get((namespace, "-".join(parts[:-cut])))
            if key is not None:
                values[key].append(float(series["value"][1]))
                break
    return {
        p.key: Signal.fresh(sum(v) / len(v), now) if (v := values.get(p.key)) else Signal.missing()
        for p in pools
    }


_REGEX_SPECIAL = re.compile(r"([.+*?()\[\]{}|^$\\])")


def _alternatives(values: Sequence[str]) -> str:
    """An RE2 alternation matching exactly these values, escaped for a PromQL string."""
    escaped = (
        _REGEX_SPECIAL.sub(r"\\\1", v).replace("\\", "\\\\").replace('"', '\\"') for v in values
    )
    return "|".join(escaped)


def _short(error: Exception) -> str:
    return " ".join(str(error).split())[:300]

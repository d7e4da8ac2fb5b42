"""A fake fleet of inference-engine pods, exposed over HTTP for a real Prometheus to scrape.

Tests control every value; names, types, labels and histogram buckets follow what the real
engines expose, so that queries written against this fleet work against a real cluster:

- vLLM v1 (`vllm/v1/metrics/loggers.py`): `model_name` and `engine` labels.
- SGLang (`python/sglang/srt/metrics/collector.py`): `model_name` label; a P/D pod adds
  `engine_type` through `labels`.
- Dynamo frontend (`lib/llm/src/http/service/metrics.rs`): `model` label; log-spaced
  buckets rounded to two significant figures, as `generate_log_buckets` makes them.
- DCGM exporter: `gpu`, `UUID`, `device`, `modelName`, `Hostname`, plus the pod mapping.

Every series also carries `namespace` and `pod`, as they look after Kubernetes service
discovery relabelling; Prometheus must scrape with `honor_labels: true` to keep them.

The exposition is the Prometheus text format 0.0.4, every line rendered by prometheus_client
(`generate_latest` over a one-family Collector built from GaugeMetricFamily,
CounterMetricFamily or HistogramMetricFamily). Lines are cached per pod and family, and the
body per fleet version: after a change a scrape re-renders only what changed and joins the
rest, so thousands of pods scrape in milliseconds, well inside a 1 s scrape interval.
"""

from __future__ import annotations

import bisect
import math
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, get_args

from prometheus_client import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from pdscaler.sim.exporter import MetricsEndpoint, ServesMetrics

Engine = Literal["vllm", "sglang", "dynamo", "dcgm"]
Kind = Literal["gauge", "counter", "histogram"]
ENGINES: tuple[str, ...] = get_args(Engine)


@dataclass(frozen=True)
class FamilySpec:
    """One metric family of an engine.

    `name` is the exposed name: counters end in `_total`, histograms are the base name
    (the exposition adds `_bucket`, `_sum` and `_count`). A `hidden` family starts out of
    the exposition: it is the other name of a renamed metric, shown with `unhide`.
    """

    name: str
    kind: Kind
    help: str
    buckets: tuple[float, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    hidden: bool = False


def one_two_five_buckets(max_value: int) -> tuple[float, ...]:
    """vLLM's `build_1_2_5_buckets`: 1, 2, 5, 10, 20, 50, … up to `max_value`."""
    bounds: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_value:
                return tuple(bounds)
            bounds.append(float(value))
        exponent += 1


def log_buckets(min_value: float, max_value: float, count: int) -> tuple[float, ...]:
    """Dynamo's `generate_log_buckets`: 0, then log-spaced to max, two significant figures."""
    bounds = [0.0]
    for i in range(1, count):
        log_value = math.log(min_value) + (
            (math.log(max_value) - math.log(min_value)) * i / (count - 1)
        )
        value = math.exp(log_value)
        scale = 10 ** (1 - math.floor(math.log10(value)))
        rounded = math.floor(value * scale + 0.5) / scale  # Rust rounds half away from zero
        if rounded != bounds[-1]:
            bounds.append(rounded)
    return tuple(bounds)


_VLLM_TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
_VLLM_ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
_VLLM_REQUEST_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
    40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
# vLLM sizes token histograms by max_model_len; 32k is a common serving setting.
_VLLM_TOKEN_BUCKETS = one_two_five_buckets(32768)
_SGLANG_TTFT_BUCKETS = (
    0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0,
    100.0, 200.0, 400.0,
)  # fmt: skip
_SGLANG_ITL_BUCKETS = (
    0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.025, 0.030, 0.035, 0.040,
    0.060, 0.080, 0.100, 0.200, 0.400, 0.600, 0.800, 1.000, 2.000, 4.000, 6.000, 8.000,
)  # fmt: skip


def _gauge(name: str, doc: str, *, hidden: bool = False) -> FamilySpec:
    return FamilySpec(name, "gauge", doc, hidden=hidden)


def _counter(name: str, doc: str, **labels: str) -> FamilySpec:
    return FamilySpec(name, "counter", doc, labels=tuple(labels.items()))


def _histogram(
    name: str, doc: str, buckets: tuple[float, ...], *, hidden: bool = False
) -> FamilySpec:
    return FamilySpec(name, "histogram", doc, buckets=buckets, hidden=hidden)


FAMILIES: dict[str, tuple[FamilySpec, ...]] = {
    "vllm": (
        _gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed."),
        _gauge("vllm:num_requests_running", "Number of requests in model execution batches."),
        _gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage."),
        # The name before vLLM 0.9 renamed it; hidden until a test simulates old vLLM.
        _gauge("vllm:gpu_cache_usage_perc", "GPU KV-cache usage (deprecated).", hidden=True),
        _counter("vllm:prompt_tokens_total", "Number of prefill tokens processed."),
        _counter("vllm:generation_tokens_total", "Number of generation tokens processed."),
        _counter(
            "vllm:request_success_total",
            "Count of successfully processed requests.",
            finished_reason="stop",
        ),
        _histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            _VLLM_TTFT_BUCKETS,
        ),
        _histogram(
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            _VLLM_ITL_BUCKETS,
        ),
        # The older name of inter-token latency; hidden until a test simulates old vLLM.
        _histogram(
            "vllm:time_per_output_token_seconds",
            "Histogram of time per output token in seconds (deprecated).",
            _VLLM_ITL_BUCKETS,
            hidden=True,
        ),
        _histogram(
            "vllm:request_prompt_tokens",
            "Number of prefill tokens processed.",
            _VLLM_TOKEN_BUCKETS,
        ),
        _histogram(
            "vllm:request_generation_tokens",
            "Number of generation tokens processed.",
            _VLLM_TOKEN_BUCKETS,
        ),
        _histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            _VLLM_REQUEST_LATENCY_BUCKETS,
        ),
    ),
    "sglang": (
        _gauge("sglang:num_queue_reqs", "The number of requests in the waiting queue."),
        _gauge("sglang:num_running_reqs", "The number of running requests."),
        _gauge("sglang:token_usage", "The token usage."),
        _gauge("sglang:gen_throughput", "The generation throughput (token/s)."),
        _gauge(
            "sglang:num_prefill_prealloc_queue_reqs",
            "The number of requests in the prefill prealloc queue.",
        ),
        _gauge(
            "sglang:num_prefill_inflight_queue_reqs",
            "The number of requests in the prefill inflight queue.",
        ),
        _gauge(
            "sglang:num_decode_prealloc_queue_reqs",
            "The number of requests in the decode prealloc queue.",
        ),
        _gauge(
            "sglang:num_decode_transfer_queue_reqs",
            "The number of requests in the decode transfer queue.",
        ),
        _counter("sglang:prompt_tokens_total", "Number of prefill tokens processed."),
        _counter("sglang:generation_tokens_total", "Number of generation tokens processed."),
        _histogram(
            "sglang:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            _SGLANG_TTFT_BUCKETS,
        ),
        _histogram(
            "sglang:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            _SGLANG_ITL_BUCKETS,
        ),
    ),
    "dynamo": (
        # Dynamo labels requests_total with error_type too; its value is "" on success,
        # which Prometheus drops, so it is left out here.
        _counter(
            "dynamo_frontend_requests_total",
            "Total number of LLM requests processed",
            endpoint="chat_completions",
            request_type="stream",
            status="success",
        ),
        _gauge("dynamo_frontend_queued_requests", "Number of requests in HTTP processing queue"),
        _gauge("dynamo_frontend_inflight_requests", "Number of inflight requests"),
        _histogram(
            "dynamo_frontend_time_to_first_token_seconds",
            "Time to first token in seconds",
            log_buckets(0.001, 480.0, 18),
        ),
        _histogram(
            "dynamo_frontend_inter_token_latency_seconds",
            "Inter-token latency in seconds",
            log_buckets(0.001, 2.0, 13),
        ),
        _histogram(
            "dynamo_frontend_input_sequence_tokens",
            "Input sequence length in tokens",
            log_buckets(50.0, 128000.0, 12),
        ),
        _histogram(
            "dynamo_frontend_output_sequence_tokens",
            "Output sequence length in tokens",
            log_buckets(50.0, 32000.0, 10),
        ),
    ),
    "dcgm": (
        _gauge("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %)."),
        _gauge("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB)."),
        _gauge("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB)."),
        _gauge("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W)."),
        _gauge("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "Ratio of time the graphics engine is active."),
    ),
}

# Labels each engine puts on its own series; `labels` given to add_pod override them.
_ENGINE_LABELS: dict[str, dict[str, str]] = {
    "vllm": {"model_name": "model", "engine": "0"},
    "sglang": {"model_name": "model"},
    "dynamo": {"model": "model"},
    # `device` and `UUID` follow `gpu` unless given; see add_pod.
    "dcgm": {"gpu": "0", "modelName": "NVIDIA H100 80GB HBM3", "Hostname": "node-0"},
}


class _Histogram:
    """Per-bucket counts (the last one is +Inf), rendered cumulatively."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float, count: int) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le is inclusive).
        self.counts[bisect.bisect_left(self.bounds, value)] += count
        self.sum += value * count

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += count
            out.append((floatToGoString(bound), float(total)))
        return out


class FakePod:
    """The series of one engine pod. Made by `FakeFleet.add_pod`; thread-safe."""

    def __init__(self, fleet: FakeFleet, engine: str, labels: dict[str, str]) -> None:
        self.engine = engine
        self.labels = labels
        self._fleet = fleet
        self._specs = {spec.name: spec for spec in FAMILIES[engine]}
        self._values = {s.name: 0.0 for s in self._specs.values() if s.kind != "histogram"}
        self._histograms = {
            s.name: _Histogram(s.buckets) for s in self._specs.values() if s.kind == "histogram"
        }
        self._hidden = {s.name for s in self._specs.values() if s.hidden}
        self._chunks: dict[str, bytes] = {}
        self._removed = False

    @property
    def namespace(self) -> str:
        return self.labels["namespace"]

    @property
    def pod(self) -> str:
        return self.labels["pod"]

    def set(self, name: str, value: float) -> None:
        """Set a gauge or counter by its exposed name (counters end in `_total`)."""
        with self._fleet._lock:
            self._check(name, ("gauge", "counter"))
            self._values[name] = float(value)
            self._changed(name)

    def observe(self, name: str, value: float, count: int = 1) -> None:
        """Add `count` observations of `value` to a histogram, named by its base name."""
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        with self._fleet._lock:
            self._check(name, ("histogram",))
            self._histograms[name].observe(value, count)
            self._changed(name)

    def hide(self, name: str) -> None:
        """Take one family out of the exposition; its values are kept."""
        with self._fleet._lock:
            self._check(name, ("gauge", "counter", "histogram"))
            self._hidden.add(name)
            self._changed(name)

    def unhide(self, name: str) -> None:
        """Put a hidden family back into the exposition."""
        with self._fleet._lock:
            self._check(name, ("gauge", "counter", "histogram"))
            self._hidden.discard(name)
            self._changed(name)

    def remove(self) -> None:
        """Take every series of this pod out of the exposition, as when the pod is deleted."""
        with self._fleet._lock:
            if not self._removed:
                self._removed = True
                del self._fleet._pods[self._key()]
                self._fleet._version += 1

    def _check(self, name: str, kinds: tuple[Kind, ...]) -> None:
        if self._removed:
            raise RuntimeError(f"pod {self.namespace}/{self.pod} was removed")
        spec = self._specs.get(name)
        if spec is None:
            known = ", ".join(sorted(self._specs))
            raise KeyError(f"{self.engine} exposes no family {name!r}; it has: {known}")
        if spec.kind not in kinds:
            raise TypeError(f"{name} is a {spec.kind}, not a {' or '.join(kinds)}")

    def _changed(self, name: str) -> None:
        self._chunks.pop(name, None)
        self._fleet._version += 1

    def _key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return self.engine, tuple(sorted(self.labels.items()))

    def _visible_chunks(self) -> Iterator[tuple[FamilySpec, bytes]]:
        """(family, its exposition lines) for each shown family; called with the lock held."""
        for name, spec in self._specs.items():
            if name in self._hidden:
                continue
            chunk = self._chunks.get(name)
            if chunk is None:
                chunk = self._chunks[name] = _render(self._family(spec))
            yield spec, chunk

    def _family(self, spec: FamilySpec) -> Metric:
        labels = {**self.labels, **dict(spec.labels)}
        keys, values = list(labels), list(labels.values())
        family: Metric
        if spec.kind == "gauge":
            family = GaugeMetricFamily(spec.name, spec.help, labels=keys)
            family.add_metric(values, self._values[spec.name])
        elif spec.kind == "counter":
            family = CounterMetricFamily(spec.name, spec.help, labels=keys)
            family.add_metric(values, self._values[spec.name])
        else:
            histogram = self._histograms[spec.name]
            family = HistogramMetricFamily(spec.name, spec.help, labels=keys)
            family.add_metric(values, histogram.cumulative(), histogram.sum)
        return family


def _empty_family(spec: FamilySpec) -> Metric:
    if spec.kind == "gauge":
        return GaugeMetricFamily(spec.name, spec.help)
    if spec.kind == "counter":
        return CounterMetricFamily(spec.name, spec.help)  # strips `_total` itself
    return HistogramMetricFamily(spec.name, spec.help)


class _OneFamily:
    """A Collector of one family, for prometheus_client's text renderer."""

    def __init__(self, family: Metric) -> None:
        self._family = family

    def collect(self) -> list[Metric]:
        return [self._family]


def _header(spec: FamilySpec) -> bytes:
    """The `# HELP` and `# TYPE` lines of a family."""
    return generate_latest(_OneFamily(_empty_family(spec)))


def _render(family: Metric) -> bytes:
    """The sample lines of a family, without its header."""
    text = generate_latest(_OneFamily(family))
    _help, _type, lines = text.split(b"\n", 2)
    return lines


class FakeFleet(ServesMetrics):
    """An exporter on 127.0.0.1 serving the series of fake engine pods at `/metrics`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pods: dict[tuple[str, tuple[tuple[str, str], ...]], FakePod] = {}
        self._version = 0
        self._cache: tuple[int, bytes] | None = None
        self._headers: dict[str, bytes] = {}
        self._endpoint = MetricsEndpoint(self._exposition, name="fake-fleet")

    def add_pod(
        self,
        *,
        engine: Engine,
        namespace: str,
        pod: str,
        labels: dict[str, str] | None = None,
    ) -> FakePod:
        """A pod whose engine families all exist at zero.

        `labels` go on every series of the pod, over the engine's own (`model_name`, …).
        Several pods may share namespace and pod (a DCGM series per GPU, say) as long as
        their labels differ.
        """
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        extra = dict(labels or {})
        if "namespace" in extra or "pod" in extra:
            raise ValueError("namespace and pod are arguments, not labels")
        merged = {**_ENGINE_LABELS[engine], **extra, "namespace": namespace, "pod": pod}
        if engine == "dcgm":
            gpu = merged["gpu"]
            merged.setdefault("device", f"nvidia{gpu}")
            stable = uuid.uuid5(uuid.NAMESPACE_DNS, f"{namespace}.{pod}.{gpu}")
            merged.setdefault("UUID", f"GPU-{stable}")
        fake = FakePod(self, engine, merged)
        with self._lock:
            if fake._key() in self._pods:
                raise ValueError(f"a {engine} pod {namespace}/{pod} with these labels exists")
            self._pods[fake._key()] = fake
            self._version += 1
        return fake

    def pods(self, namespace: str | None = None) -> list[FakePod]:
        """The pods in the exposition, optionally of one namespace."""
        with self._lock:
            pods = list(self._pods.values())
        return [p for p in pods if namespace is None or p.namespace == namespace]

    def clear(self, namespace: str | None = None) -> None:
        """Remove every pod, or every pod of one namespace."""
        for fake in self.pods(namespace):
            fake.remove()

    def _exposition(self) -> bytes:
        """The whole body: each family's header once, then its lines from every pod."""
        with self._lock:
            if self._cache is None or self._cache[0] != self._version:
                families: dict[str, list[bytes]] = {}
                for fake in self._pods.values():
                    for spec, chunk in fake._visible_chunks():
                        parts = families.get(spec.name)
                        if parts is None:
                            header = self._headers.get(spec.name)
                            if header is None:
                                header = self._headers[spec.name] = _header(spec)
                            parts = families[spec.name] = [header]
                        parts.append(chunk)
                body = b"".join(b"".join(parts) for parts in families.values())
                self._cache = (self._version, body)
            return self._cache[1]

"""What the engine observes: per-pool signals with their quality, and the scale of a target."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from pdscaler.domain.policy import EnginePreset, MetricType, Policy, PoolSpec, Role


class Quality(StrEnum):
    """How far a signal can be trusted. Only ``fresh`` values are used for scaling."""

    FRESH = "fresh"  # a recent, finite sample
    STALE = "stale"  # the newest sample is older than allowed
    EMPTY = "empty"  # the source answered with no series at all
    NAN = "nan"  # the source answered NaN or Inf (e.g. a rate over no requests)
    ERROR = "error"  # the source could not be asked


class SignalName(StrEnum):
    ARRIVAL_RATE = "arrivalRate"  # requests/s
    INPUT_TOKEN_RATE = "inputTokenRate"  # prompt tokens/s
    OUTPUT_TOKEN_RATE = "outputTokenRate"  # generated tokens/s
    MEAN_INPUT_LENGTH = "meanInputLength"  # tokens
    P90_INPUT_LENGTH = "p90InputLength"
    MEAN_OUTPUT_LENGTH = "meanOutputLength"
    P90_OUTPUT_LENGTH = "p90OutputLength"
    QUEUED_REQUESTS = "queuedRequests"  # total over the pool
    QUEUED_PREFILL_TOKENS = "queuedPrefillTokens"  # total over the pool
    RUNNING_REQUESTS = "runningRequests"  # total over the pool
    KV_CACHE_UTILIZATION = "kvCacheUtilization"  # mean over the pool's replicas, 0..1
    TTFT_MS = "ttftMs"  # at the quantile the policy names
    ITL_MS = "itlMs"  # at the quantile the policy names
    GPU_UTILIZATION = "gpuUtilization"  # mean, 0..1; displayed and audited, not for scaling


@dataclass(frozen=True, slots=True)
class Signal:
    value: float | None
    sampled_at: datetime | None
    quality: Quality
    detail: str | None = None  # why a signal is not fresh, when there is more to say

    @classmethod
    def fresh(cls, value: float, sampled_at: datetime) -> Signal:
        if not math.isfinite(value):
            return cls(None, sampled_at, Quality.NAN)
        return cls(value, sampled_at, Quality.FRESH)

    @classmethod
    def missing(cls, quality: Quality = Quality.EMPTY, detail: str | None = None) -> Signal:
        return cls(None, None, quality, detail)

    def usable(self, now: datetime, max_age_s: float) -> bool:
        """Fresh, finite and recent enough. A true zero is usable."""
        return self.usable_after(now - timedelta(seconds=max_age_s))

    def usable_after(self, oldest: datetime) -> bool:
        """Fresh, finite and sampled at or after ``oldest``."""
        return (
            self.quality is Quality.FRESH
            and self.value is not None
            and self.sampled_at is not None
            and self.sampled_at >= oldest
        )

    def audit(self) -> dict[str, object]:
        audit: dict[str, object] = {
            "value": self.value,
            "quality": self.quality.value,
            "sampledAt": self.sampled_at.isoformat() if self.sampled_at else None,
        }
        if self.detail:
            audit["detail"] = self.detail
        return audit


@dataclass(frozen=True)
class PoolSignals:
    signals: Mapping[SignalName, Signal] = field(default_factory=dict)

    def get(self, name: SignalName) -> Signal:
        return self.signals.get(name) or Signal.missing()

    def audit(self) -> dict[str, object]:
        return {name.value: signal.audit() for name, signal in self.signals.items()}


@dataclass(frozen=True, slots=True)
class PoolKey:
    namespace: str
    policy: str
    role: Role

    def __str__(self) -> str:
        return f"{self.namespace}/{self.policy}/{self.role.value}"


SeriesKey = tuple[PoolKey, SignalName]


@dataclass(frozen=True, slots=True)
class PoolQuery:
    """What a metrics source needs to find one pool's series."""

    key: PoolKey
    engine: EnginePreset
    pool: PoolSpec
    selector: Mapping[str, str] = field(default_factory=dict)  # label -> value of the pool
    ttft_quantile: float = 0.9
    itl_quantile: float = 0.9
    queries: Mapping[SignalName, str] = field(default_factory=dict)  # engine "custom"

    @classmethod
    def of(cls, policy: Policy, role: Role) -> PoolQuery:
        pool = policy.spec.pool(role)
        quantiles = {m.type: m.quantile for m in pool.metrics if m.quantile is not None}
        return cls(
            key=PoolKey(policy.metadata.namespace, policy.metadata.name, role),
            engine=policy.spec.engine,
            pool=pool,
            selector=pool.metrics_selector or {},
            ttft_quantile=quantiles.get(MetricType.TTFT, 0.9),
            itl_quantile=quantiles.get(MetricType.ITL, 0.9),
            queries={SignalName(k): v for k, v in (policy.spec.queries or {}).items()},
        )


@dataclass(frozen=True, slots=True)
class ScaleState:
    """A target as its /scale subresource and its pods show it."""

    spec_replicas: int  # what the target is asked to run (includes pending pods)
    ready_replicas: int  # serving now
    pending_replicas: int  # asked for, not yet ready (counts against the GPU budget)
    resource_version: str | None = None
    selector: str | None = None
    unschedulable: int = 0  # pods the scheduler could not place for longer than a threshold
    managed_by: str | None = None  # another autoscaler that targets it too ("HPA ns/name")

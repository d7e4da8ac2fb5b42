"""The PDScalingPolicy model: one policy owns a prefill pool and a decode pool.

Validation runs in two passes. The structural pass (pydantic) checks types, ranges and
unknown fields. The semantic pass (:func:`semantic_errors`) checks relations between
fields: min against max, metric types against the pool's role, the ratio band and the GPU
budget against the pools' bounds. Both report :class:`FieldError` with the dotted path of
the field, as a user would write it (``spec.prefill.metrics[0].targetPerReplica``).

``behavior`` has exactly the field names, meaning and defaults of the Kubernetes
HorizontalPodAutoscaler v2 ``behavior`` field.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from pdscaler.domain.errors import FieldError, InvalidInput

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
_API_VERSION_RE = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?v[0-9]+((alpha|beta)[0-9]+)?$")


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class Mode(StrEnum):
    """active acts; shadow decides and audits but never writes; paused does nothing."""

    ACTIVE = "active"
    SHADOW = "shadow"
    PAUSED = "paused"


class Role(StrEnum):
    PREFILL = "prefill"
    DECODE = "decode"


class EnginePreset(StrEnum):
    VLLM = "vllm"
    SGLANG = "sglang"
    DYNAMO = "dynamo"
    TRTLLM = "trtllm"
    CUSTOM = "custom"


class MetricType(StrEnum):
    QUEUED_PREFILL_TOKENS = "QueuedPrefillTokens"
    QUEUED_REQUESTS = "QueuedRequests"
    RUNNING_REQUESTS = "RunningRequests"
    KV_CACHE_UTILIZATION = "KVCacheUtilization"
    TTFT = "TTFT"
    ITL = "ITL"
    CAPACITY = "Capacity"


# Which metric types can size which pool, and which field each type reads.
ROLE_METRICS: Mapping[Role, frozenset[MetricType]] = {
    Role.PREFILL: frozenset(
        {
            MetricType.QUEUED_PREFILL_TOKENS,
            MetricType.QUEUED_REQUESTS,
            MetricType.TTFT,
            MetricType.CAPACITY,
        }
    ),
    Role.DECODE: frozenset(
        {
            MetricType.KV_CACHE_UTILIZATION,
            MetricType.RUNNING_REQUESTS,
            MetricType.QUEUED_REQUESTS,
            MetricType.ITL,
            MetricType.CAPACITY,
        }
    ),
}
METRIC_FIELD: Mapping[MetricType, str | None] = {
    MetricType.QUEUED_PREFILL_TOKENS: "targetPerReplica",
    MetricType.QUEUED_REQUESTS: "targetPerReplica",
    MetricType.RUNNING_REQUESTS: "targetPerReplica",
    MetricType.KV_CACHE_UTILIZATION: "target",
    MetricType.TTFT: "quantile",
    MetricType.ITL: "quantile",
    MetricType.CAPACITY: None,
}


class ScaleTargetRef(_Model):
    api_version: Annotated[str, Field(min_length=1, max_length=253)]
    kind: Annotated[str, Field(pattern=r"^[A-Z][A-Za-z0-9]{0,62}$")]
    name: Annotated[str, Field(pattern=DNS_SUBDOMAIN)]
    # A role inside a workload that sizes its roles itself (AIBrix StormService), whose
    # own /scale counts whole prefill+decode units.
    role: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")] | None = None

    @model_validator(mode="after")
    def _role_only_where_roles_exist(self) -> ScaleTargetRef:
        if self.role is not None and self.kind not in ROLE_KINDS:
            raise ValueError(f"role is only for {', '.join(sorted(ROLE_KINDS))}; "
                             f"a {self.kind} is sized through its /scale")  # fmt: skip
        if self.role is None and self.kind in ROLE_KINDS:
            raise ValueError(f"a {self.kind}'s /scale counts whole prefill+decode units: "
                             "set role to the role this pool is")  # fmt: skip
        return self


# Kinds whose roles pdscaler sizes one by one, by a patch of the role's replicas.
ROLE_KINDS = frozenset({"StormService"})


class MetricSpec(_Model):
    type: MetricType
    target_per_replica: Annotated[float, Field(gt=0, le=1e9)] | None = None
    target: Annotated[float, Field(gt=0, le=1)] | None = None
    quantile: Annotated[float, Field(gt=0, lt=1)] | None = None
    profile: Annotated[str, Field(min_length=1, max_length=253)] | None = None


class ScalingPolicyType(StrEnum):
    PODS = "Pods"
    PERCENT = "Percent"


class SelectPolicy(StrEnum):
    MAX = "Max"
    MIN = "Min"
    DISABLED = "Disabled"


class HPAScalingPolicy(_Model):
    """At most ``value`` Pods (or ``value`` percent) of change within ``periodSeconds``."""

    type: ScalingPolicyType
    value: Annotated[int, Field(gt=0)]
    period_seconds: Annotated[int, Field(gt=0, le=1800)]


class HPAScalingRules(_Model):
    stabilization_window_seconds: Annotated[int, Field(ge=0, le=3600)] | None = None
    select_policy: SelectPolicy | None = None
    policies: list[HPAScalingPolicy] | None = None
    tolerance: Annotated[float, Field(ge=0, lt=1)] | None = None


class Behavior(_Model):
    scale_up: HPAScalingRules | None = None
    scale_down: HPAScalingRules | None = None


# HPA v2 defaults, from the Kubernetes documentation ("Default Behavior").
DEFAULT_TOLERANCE = 0.1
DEFAULT_SCALE_UP = HPAScalingRules(
    stabilization_window_seconds=0,
    select_policy=SelectPolicy.MAX,
    policies=[
        HPAScalingPolicy(type=ScalingPolicyType.PERCENT, value=100, period_seconds=15),
        HPAScalingPolicy(type=ScalingPolicyType.PODS, value=4, period_seconds=15),
    ],
    tolerance=DEFAULT_TOLERANCE,
)
DEFAULT_SCALE_DOWN = HPAScalingRules(
    stabilization_window_seconds=300,
    select_policy=SelectPolicy.MAX,
    policies=[HPAScalingPolicy(type=ScalingPolicyType.PERCENT, value=100, period_seconds=15)],
    tolerance=DEFAULT_TOLERANCE,
)


def effective_rules(given: HPAScalingRules | None, default: HPAScalingRules) -> HPAScalingRules:
    """Fill the fields a user left out with HPA's defaults, field by field, as HPA does."""
    if given is None:
        return default
    return HPAScalingRules(
        stabilization_window_seconds=(
            given.stabilization_window_seconds
            if given.stabilization_window_seconds is not None
            else default.stabilization_window_seconds
        ),
        select_policy=given.select_policy or default.select_policy,
        policies=given.policies if given.policies is not None else default.policies,
        tolerance=given.tolerance if given.tolerance is not None else default.tolerance,
    )


class Fallback(_Model):
    """What to do after metrics have failed for ``failureThreshold`` ticks in a row.

    The pool goes to ``replicas``, but only upwards: missing metrics never scale down.
    """

    failure_threshold: Annotated[int, Field(ge=1, le=100)] = 3
    replicas: Annotated[int, Field(ge=0, le=10_000)]


class PoolSpec(_Model):
    scale_target_ref: ScaleTargetRef
    min_replicas: Annotated[int, Field(ge=0, le=10_000)] = 1
    max_replicas: Annotated[int, Field(ge=1, le=10_000)]
    gpus_per_replica: Annotated[int, Field(ge=1, le=1024)] = 1
    metrics: Annotated[list[MetricSpec], Field(min_length=1, max_length=16)]
    behavior: Behavior | None = None
    fallback: Fallback | None = None
    # Which series belong to this pool, besides the policy's namespace; by default the
    # engine preset's role label (vLLM: role, SGLang: engine_type, Dynamo: worker_type).
    metrics_selector: (
        dict[
            Annotated[str, Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]{0,127}$")],
            Annotated[str, Field(min_length=1, max_length=253)],
        ]
        | None
    ) = None

    @functools.cached_property
    def scale_up_rules(self) -> HPAScalingRules:
        return effective_rules(self.behavior.scale_up if self.behavior else None, DEFAULT_SCALE_UP)

    @functools.cached_property
    def windows(self) -> tuple[timedelta, timedelta, timedelta]:
        """Scale-up and scale-down stabilization windows, and how long to remember."""
        up = timedelta(seconds=self.scale_up_rules.stabilization_window_seconds or 0)
        down = timedelta(seconds=self.scale_down_rules.stabilization_window_seconds or 0)
        return up, down, max(up, down, timedelta(seconds=1))

    @functools.cached_property
    def scale_down_rules(self) -> HPAScalingRules:
        return effective_rules(
            self.behavior.scale_down if self.behavior else None, DEFAULT_SCALE_DOWN
        )


class Slo(_Model):
    ttft_ms: Annotated[float, Field(gt=0, le=600_000)] | None = None
    itl_ms: Annotated[float, Field(gt=0, le=60_000)] | None = None
    # Above the SLO a pool never scales down; above SLO x (1 + guardMargin) it scales up.
    guard_margin: Annotated[float, Field(ge=0, le=10)] = 0.2


class RatioBand(_Model):
    """Bounds on prefill replicas divided by decode replicas."""

    min: Annotated[float, Field(gt=0, le=1000)]
    max: Annotated[float, Field(gt=0, le=1000)]


class BudgetPriority(StrEnum):
    """Who gets GPUs first when the budget cannot cover both pools' increases."""

    PROPORTIONAL = "proportional"  # both increases are cut by the same share
    PREFILL = "prefill"
    DECODE = "decode"


class Coordination(_Model):
    prefill_to_decode_ratio: RatioBand | None = None
    gpu_budget: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    priority: BudgetPriority = BudgetPriority.PROPORTIONAL


class DirectionPause(_Model):
    """Pause one direction only, as KEDA's paused-scale-in / paused-scale-out do."""

    scale_up: bool = False
    scale_down: bool = False


class ExternalChangeAction(StrEnum):
    RESPECT = "respect"  # hold the size someone else set, for respectSeconds
    RECONCILE = "reconcile"  # decide as usual, which may set it back


class ExternalChanges(_Model):
    action: ExternalChangeAction = ExternalChangeAction.RESPECT
    respect_seconds: Annotated[int, Field(ge=0, le=86_400)] = 600


class ForecastModel(StrEnum):
    AUTO = "auto"
    NONE = "none"
    LAST_VALUE = "lastValue"
    MOVING_AVERAGE = "movingAverage"
    HOLT = "holt"
    RIDGE = "ridge"
    QUANTILE_GBR = "quantileGbr"


class ForecastSpec(_Model):
    model: ForecastModel = ForecastModel.AUTO
    quantile: Annotated[float, Field(ge=0.5, lt=1)] = 0.9


class Panic(_Model):
    """Knative-style panic mode: a pool whose recommendation reaches ``threshold`` times
    its ready replicas is in a burst; until ``windowSeconds`` pass without one, it does
    not scale down. ``threshold: null`` turns it off."""

    threshold: Annotated[float, Field(ge=1.1, le=100)] | None = 2.0
    window_seconds: Annotated[int, Field(ge=0, le=3600)] = 60


class PolicySpec(_Model):
    mode: Mode = Mode.ACTIVE
    engine: EnginePreset = EnginePreset.VLLM
    slo: Slo = Field(default_factory=Slo)
    cold_start_seconds: Annotated[int, Field(ge=0, le=3600)] = 120
    prefill: PoolSpec
    decode: PoolSpec
    coordination: Coordination = Field(default_factory=Coordination)
    forecast: ForecastSpec = Field(default_factory=ForecastSpec)
    panic: Panic = Field(default_factory=Panic)
    pause: DirectionPause = Field(default_factory=DirectionPause)
    external_changes: ExternalChanges = Field(default_factory=ExternalChanges)
    # engine "custom": one PromQL template per signal (see docs/metrics.md)
    queries: dict[str, Annotated[str, Field(min_length=1, max_length=4000)]] | None = None

    def pool(self, role: Role) -> PoolSpec:
        return self.prefill if role is Role.PREFILL else self.decode


class ObjectMeta(_Model):
    name: Annotated[str, Field(pattern=DNS_LABEL)]
    namespace: Annotated[str, Field(pattern=DNS_LABEL)] = "default"
    labels: dict[Annotated[str, Field(max_length=317)], Annotated[str, Field(max_length=63)]] = (
        Field(default_factory=dict)
    )
    annotations: dict[Annotated[str, Field(max_length=317)], str] = Field(default_factory=dict)
    resource_version: Annotated[str, Field(pattern=r"^[0-9]{1,18}$")] | None = Field(
        default=None,
        description="Input only: the version the change is based on (optimistic concurrency).",
    )


class Policy(_Model):
    api_version: Literal["pdscaler.io/v1alpha1"] = "pdscaler.io/v1alpha1"
    kind: Literal["PDScalingPolicy"] = "PDScalingPolicy"
    metadata: ObjectMeta
    spec: PolicySpec

    @property
    def key(self) -> tuple[str, str]:
        return (self.metadata.namespace, self.metadata.name)

    def document(self) -> dict[str, Any]:
        """The stored form: camelCase, defaults filled in, no resourceVersion."""
        doc = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        doc["metadata"].pop("resourceVersion", None)
        return doc

    def with_mode(self, mode: Mode) -> Policy:
        return self.model_copy(update={"spec": self.spec.model_copy(update={"mode": mode})})


def field_path(loc: Sequence[str | int]) -> str:
    """('spec', 'prefill', 'metrics', 0, 'type') -> 'spec.prefill.metrics[0].type'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def parse_policy(document: object) -> Policy:
    """Validate a policy document (already decoded from JSON or YAML), both passes.

    Raises :class:`InvalidInput` listing every problem found, each with its field path.
    """
    if not isinstance(document, dict):
        raise InvalidInput(
            "a policy must be an object", errors=(FieldError("", "expected an object"),)
        )
    nul = tuple(nul_errors(document))
    if nul:
        raise InvalidInput(_summary(nul), errors=nul)
    try:
        # Documents use the camelCase names only; snake_case is for Python code.
        policy = Policy.model_validate(document, by_alias=True, by_name=False)
    except ValidationError as e:
        errors = tuple(
            FieldError(field_path(err["loc"]), _message(err)) for err in e.errors(include_url=False)
        )
        raise InvalidInput(_summary(errors), errors=errors) from None
    errors = tuple(semantic_errors(policy))
    if errors:
        raise InvalidInput(_summary(errors), errors=errors)
    return policy


def nul_errors(value: object, path: str = "") -> Iterator[FieldError]:
    """NUL characters anywhere in a document: no database stores them faithfully."""
    if isinstance(value, str) and "\x00" in value:
        yield FieldError(path, "must not contain NUL characters")
    elif isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and "\x00" in key:
                yield FieldError(path, f"key {key!r} must not contain NUL characters")
            yield from nul_errors(item, child)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from nul_errors(item, f"{path}[{i}]")


def _message(err: Mapping[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field"
    return str(err["msg"])


def _summary(errors: Sequence[FieldError]) -> str:
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    where = f"{first.field}: " if first.field else ""
    return f"invalid policy: {where}{first.message}{more}"


def semantic_errors(policy: Policy) -> list[FieldError]:
    """Relations between fields that the structural pass cannot check."""
    spec = policy.spec
    errors: list[FieldError] = []
    for role in Role:
        errors += _pool_errors(f"spec.{role.value}", role, spec.pool(role), spec.slo)
    if spec.prefill.scale_target_ref == spec.decode.scale_target_ref:
        errors.append(
            FieldError(
                "spec.decode.scaleTargetRef",
                "prefill and decode must scale different targets",
            )
        )
    errors += _coordination_errors(spec)
    errors += _query_errors(spec)
    return errors


TEMPLATE_PLACEHOLDERS = frozenset({"sel", "match", "by", "w", "q", "namespaces"})


def _query_errors(spec: PolicySpec) -> list[FieldError]:
    from pdscaler.domain.signals import SignalName  # late: signals imports this module

    if spec.engine is EnginePreset.CUSTOM and not spec.queries:
        return [FieldError("spec.queries", "is required when engine is custom")]
    if spec.queries and spec.engine is not EnginePreset.CUSTOM:
        return [FieldError("spec.queries", f"applies to engine custom only, not {spec.engine}")]
    errors = []
    if spec.engine is EnginePreset.CUSTOM:
        # The same query answers for both pools: only their selectors tell them apart.
        unselected = [r for r in Role if not spec.pool(r).metrics_selector]
        if unselected or spec.prefill.metrics_selector == spec.decode.metrics_selector:
            role = (unselected or [Role.DECODE])[0]
            message = "engine custom needs a different selector for each pool"
            errors.append(FieldError(f"spec.{role.value}.metricsSelector", message))
    known = {s.value for s in SignalName}
    for name, template in (spec.queries or {}).items():
        path = f"spec.queries.{name}"
        if name not in known:
            errors.append(
                FieldError(path, f"unknown signal; use one of {', '.join(sorted(known))}")
            )
        elif "{{by}}" not in template or not ("{{sel}}" in template or "{{match}}" in template):
            errors.append(
                FieldError(path, "must select with {{sel}} (or {{match}}) and group by {{by}}")
            )
        elif unknown := set(re.findall(r"\{\{(\w+)\}\}", template)) - TEMPLATE_PLACEHOLDERS:
            errors.append(FieldError(path, f"unknown placeholders {sorted(unknown)}; use "
                                     f"{', '.join(sorted(TEMPLATE_PLACEHOLDERS))}"))  # fmt: skip
    return errors


def _pool_errors(path: str, role: Role, pool: PoolSpec, slo: Slo) -> list[FieldError]:
    errors: list[FieldError] = []
    if pool.min_replicas > pool.max_replicas:
        errors.append(
            FieldError(
                f"{path}.minReplicas",
                f"must not exceed maxReplicas ({pool.min_replicas} > {pool.max_replicas})",
            )
        )
    fallback = pool.fallback
    if fallback is not None and not pool.min_replicas <= fallback.replicas <= pool.max_replicas:
        errors.append(
            FieldError(
                f"{path}.fallback.replicas",
                f"must be within [minReplicas, maxReplicas] = "
                f"[{pool.min_replicas}, {pool.max_replicas}]",
            )
        )
    if not _API_VERSION_RE.match(pool.scale_target_ref.api_version):
        errors.append(
            FieldError(
                f"{path}.scaleTargetRef.apiVersion",
                "must be 'group/version' or 'version', e.g. apps/v1",
            )
        )
    seen: set[MetricType] = set()
    for i, metric in enumerate(pool.metrics):
        errors += _metric_errors(f"{path}.metrics[{i}]", role, metric, slo, seen)
        seen.add(metric.type)
    behavior = pool.behavior or Behavior()
    for direction, rules in (("scaleUp", behavior.scale_up), ("scaleDown", behavior.scale_down)):
        if rules is not None and rules.policies is not None and not rules.policies:
            errors.append(
                FieldError(
                    f"{path}.behavior.{direction}.policies",
                    "must list at least one policy (omit the field for HPA's defaults)",
                )
            )
    return errors


def _metric_errors(
    path: str, role: Role, metric: MetricSpec, slo: Slo, seen: set[MetricType]
) -> list[FieldError]:
    if metric.type not in ROLE_METRICS[role]:
        allowed = ", ".join(sorted(ROLE_METRICS[role]))
        return [
            FieldError(
                f"{path}.type", f"{metric.type} cannot size a {role} pool; use one of {allowed}"
            )
        ]
    errors: list[FieldError] = []
    if metric.type in seen:
        errors.append(FieldError(f"{path}.type", f"{metric.type} is listed twice"))
    wanted = METRIC_FIELD[metric.type]
    given = {
        "targetPerReplica": metric.target_per_replica,
        "target": metric.target,
        "quantile": metric.quantile,
    }
    for name, value in given.items():
        if name == wanted and value is None:
            errors.append(FieldError(f"{path}.{name}", f"is required for {metric.type}"))
        elif name != wanted and value is not None:
            errors.append(FieldError(f"{path}.{name}", f"does not apply to {metric.type}"))
    if metric.profile is not None and metric.type is not MetricType.CAPACITY:
        errors.append(FieldError(f"{path}.profile", f"does not apply to {metric.type}"))
    if metric.type is MetricType.CAPACITY and metric.profile is None:
        errors.append(FieldError(
            f"{path}.profile",
            "is required: the measured performance of one replica of this model and engine "
            "(a bundled profile such as h200-llama3.1-8b-fp8-tp1, or a Dynamo profile directory)",
        ))  # fmt: skip
    if metric.type is MetricType.TTFT and slo.ttft_ms is None:
        errors.append(FieldError("spec.slo.ttftMs", "is required by the TTFT metric"))
    if metric.type is MetricType.ITL and slo.itl_ms is None:
        errors.append(FieldError("spec.slo.itlMs", "is required by the ITL metric"))
    if metric.type is MetricType.CAPACITY:
        needed = ("ttftMs", slo.ttft_ms) if role is Role.PREFILL else ("itlMs", slo.itl_ms)
        if needed[1] is None:
            errors.append(FieldError(f"spec.slo.{needed[0]}", "is required by the Capacity metric"))
    return errors


def _coordination_errors(spec: PolicySpec) -> list[FieldError]:
    errors: list[FieldError] = []
    band = spec.coordination.prefill_to_decode_ratio
    path = "spec.coordination"
    if band is not None:
        if band.min > band.max:
            errors.append(
                FieldError(
                    f"{path}.prefillToDecodeRatio.min",
                    f"must not exceed max ({band.min} > {band.max})",
                )
            )
        elif spec.prefill.max_replicas < band.min * max(spec.decode.min_replicas, 1):
            errors.append(
                FieldError(
                    f"{path}.prefillToDecodeRatio.min",
                    f"cannot be met: prefill.maxReplicas {spec.prefill.max_replicas} is below "
                    f"{band.min} x decode.minReplicas {spec.decode.min_replicas}",
                )
            )
        elif spec.prefill.min_replicas > band.max * spec.decode.max_replicas:
            errors.append(
                FieldError(
                    f"{path}.prefillToDecodeRatio.max",
                    f"cannot be met: prefill.minReplicas {spec.prefill.min_replicas} is above "
                    f"{band.max} x decode.maxReplicas {spec.decode.max_replicas}",
                )
            )
    budget = spec.coordination.gpu_budget
    if budget is not None:
        floor = sum(p.min_replicas * p.gpus_per_replica for p in (spec.prefill, spec.decode))
        if budget < floor:
            errors.append(
                FieldError(
                    f"{path}.gpuBudget",
                    f"{budget} GPUs is below the {floor} GPUs that the pools' minReplicas need",
                )
            )
    return errors

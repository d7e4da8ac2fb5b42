"""Reason codes: every decision step says why it produced its value.

The names follow the Kubernetes HPA's condition reasons where the meaning is the same
(``ScaleUpLimit``, ``TooManyReplicas``, ``TooFewReplicas``, ``DesiredWithinRange``).
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # recommend
    TARGET_TRACKING = "TargetTracking"
    CAPACITY_MODEL = "CapacityModel"
    FORECAST_FLOOR = "ForecastFloor"  # the capacity model on the load forecast at the horizon
    SLO_UNREACHABLE = "SloUnreachable"
    WITHIN_TOLERANCE = "WithinTolerance"
    NO_RECOMMENDATION = "NoRecommendation"
    # quality gate
    METRICS_OK = "MetricsOk"
    METRICS_PARTIAL = "MetricsPartial"
    METRICS_MISSING = "MetricsMissing"
    FALLBACK = "Fallback"
    # SLO guard
    SLO_MET = "SloMet"
    SLO_VIOLATED = "SloViolated"
    SLO_BREACHED = "SloBreached"
    # consolidation
    CONSOLIDATION_SAFE = "ConsolidationSafe"
    CONSOLIDATION_UNSAFE = "ConsolidationUnsafe"
    # stabilization
    NOT_STABILIZED = "NotStabilized"
    SCALE_UP_STABILIZED = "ScaleUpStabilized"
    SCALE_DOWN_STABILIZED = "ScaleDownStabilized"
    # panic mode
    PANIC = "Panic"
    # rate limits and bounds
    DESIRED_WITHIN_RANGE = "DesiredWithinRange"
    SCALE_UP_LIMIT = "ScaleUpLimit"
    SCALE_DOWN_LIMIT = "ScaleDownLimit"
    TOO_MANY_REPLICAS = "TooManyReplicas"
    TOO_FEW_REPLICAS = "TooFewReplicas"
    SCALING_DISABLED = "ScalingDisabled"
    # coordination
    RATIO_BOUND = "RatioBound"
    WITHIN_RATIO = "WithinRatio"
    GPU_BUDGET = "GpuBudget"
    WITHIN_BUDGET = "WithinBudget"
    # modes and outside changes
    PAUSED = "Paused"
    SCALE_UP_PAUSED = "ScaleUpPaused"
    SCALE_DOWN_PAUSED = "ScaleDownPaused"
    EXTERNAL_CHANGE = "ExternalChange"
    EXTERNAL_CHANGE_RESPECTED = "ExternalChangeRespected"
    MANAGED_ELSEWHERE = "ManagedElsewhere"
    # placement
    UNSCHEDULABLE = "Unschedulable"

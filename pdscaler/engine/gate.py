"""The metric-quality gate: missing or stale metrics never scale a pool down.

- every metric usable: the recommendation stands;
- some metrics unusable: only a scale-up is allowed (what is known says "more");
- no metric usable: hold the current size;
- after ``fallback.failureThreshold`` such ticks in a row: the fallback size, upwards only.
"""

from __future__ import annotations

from typing import NamedTuple

from pdscaler.domain.decision import Step
from pdscaler.domain.policy import Fallback
from pdscaler.domain.reasons import Reason


class GateResult(NamedTuple):
    step: Step
    failures: int  # ticks in a row with unusable metrics, this one included


def gate_recommendation(
    recommendation: int | None,
    current_replicas: int,
    usable: int,
    total: int,
    failures_before: int,
    fallback: Fallback | None,
) -> GateResult:
    """Apply the gate to ``recommendation`` given how many of ``total`` metrics were usable."""
    if usable == total and recommendation is not None:
        return GateResult(Step("gate", recommendation, Reason.METRICS_OK, ""), 0)
    if usable == total:  # every metric could be read, and none asked for a change
        return GateResult(
            Step("gate", current_replicas, Reason.METRICS_OK, "no metric asks for a change"), 0
        )
    failures = failures_before + 1
    if fallback is not None and failures >= fallback.failure_threshold:
        value = max(current_replicas, fallback.replicas, recommendation or 0)
        message = f"metrics failed {failures} ticks in a row; fallback {fallback.replicas}"
        return GateResult(Step("gate", value, Reason.FALLBACK, message), failures)
    if usable == 0 or recommendation is None:
        message = f"no usable metric ({failures} ticks in a row); holding"
        return GateResult(Step("gate", current_replicas, Reason.METRICS_MISSING, message), failures)
    value = max(recommendation, current_replicas)
    message = f"{total - usable} of {total} metrics unusable; only scale-up allowed"
    return GateResult(Step("gate", value, Reason.METRICS_PARTIAL, message), failures)

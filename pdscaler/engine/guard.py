"""The SLO guard and the consolidation check: two ways a scale-down is refused."""

from __future__ import annotations

import math
from collections.abc import Iterable

from pdscaler.domain.decision import Step
from pdscaler.domain.reasons import Reason


def guard_slo(
    value: int,
    current_replicas: int,
    measured_ms: float | None,
    slo_ms: float | None,
    margin: float,
    *,
    arriving: int = 0,
    settled: bool = False,
) -> Step | None:
    """Above the SLO, never shrink; above SLO x (1 + margin), grow by at least one, unless
    replicas are still ``arriving`` (asked for, not ready: their help is on its way) or
    the latency is ``settled`` (a trailing quantile of a queue that is gone)."""
    if measured_ms is None or slo_ms is None:
        return None
    over = f"{measured_ms:.0f} ms is over SLO {slo_ms:.0f} ms"
    if measured_ms > slo_ms * (1 + margin) and not arriving and not settled:
        grown = max(value, current_replicas + 1)
        return Step("slo", grown, Reason.SLO_BREACHED, f"{over} + {margin:.0%}")
    if measured_ms > slo_ms:
        why = (f"; {arriving} replicas on their way" if arriving and
               measured_ms > slo_ms * (1 + margin) else "")  # fmt: skip
        return Step("slo", max(value, current_replicas), Reason.SLO_VIOLATED,
                    f"{over}: no scale-down{why}")  # fmt: skip
    return Step("slo", value, Reason.SLO_MET, f"{measured_ms:.0f} ms within {slo_ms:.0f} ms")


def hold_unplaceable(value: int, current_replicas: int, unschedulable: int) -> Step | None:
    """Pods the scheduler cannot place: asking for more would only queue more of them."""
    if unschedulable <= 0 or value <= current_replicas:
        return None
    pods = "pod" if unschedulable == 1 else "pods"
    return Step("schedule", current_replicas, Reason.UNSCHEDULABLE,
                f"{unschedulable} {pods} cannot be scheduled: no scale-up until they are placed "
                f"(wanted {value})")  # fmt: skip


def consolidation_floor(loads: Iterable[tuple[float, float]], tolerance: float) -> int:
    """The fewest replicas whose predicted per-replica load stays under target.

    ``loads`` are (total load, target per replica) pairs. Removing k of N replicas puts
    load x N/(N-k) on each survivor; it must stay under target by the scale-down
    tolerance, or the very next tick would see it over target and scale up again.
    """
    floor = 0
    for total, target in loads:
        floor = max(floor, math.ceil(total / (target * (1 - tolerance)) - 1e-9))
    return floor


def consolidate(value: int, current_replicas: int, floor: int) -> Step | None:
    if value >= current_replicas:
        return None
    if floor > value:
        kept = min(current_replicas, floor)
        return Step(
            "consolidate",
            kept,
            Reason.CONSOLIDATION_UNSAFE,
            f"{value} replicas would run over target; {kept} would not",
        )
    return Step("consolidate", value, Reason.CONSOLIDATION_SAFE, f"{floor} replicas suffice")

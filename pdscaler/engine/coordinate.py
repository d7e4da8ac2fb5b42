"""Coordination of a prefill/decode pair: the ratio band, then the shared GPU budget.

The band is kept by raising the lagging pool (as far as its rate policies and
maxReplicas allow this tick); if that cannot close the gap, the leading pool is held
back (not below its minReplicas, nor below its current size: the band never removes
serving capacity). The budget comes last and wins:
it cuts increases only, by ``coordination.priority``, and never shrinks a pool below
the size it runs now.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pdscaler.domain.decision import Step
from pdscaler.domain.policy import BudgetPriority, Coordination, PoolSpec
from pdscaler.domain.reasons import Reason


@dataclass(frozen=True, slots=True)
class Pair:
    prefill: int
    decode: int


@dataclass(frozen=True, slots=True)
class Bounds:
    """The sizes a pool may take this tick: its rate policies and min/max allow no more."""

    lowest: int
    highest: int


def coordinate_ratio(
    desired: Pair, current: Pair, prefill: Bounds, decode: Bounds, coordination: Coordination
) -> tuple[Pair, Step, Step] | None:
    band = coordination.prefill_to_decode_ratio
    if band is None:
        return None
    p, d = desired.prefill, desired.decode
    message = "within the ratio band"
    if p < band.min * d:
        p = min(prefill.highest, math.ceil(band.min * d - 1e-9))
        if p < band.min * d:  # prefill can grow no further: hold decode back
            d = max(decode.lowest, current.decode, math.floor(p / band.min + 1e-9))
        message = f"prefill/decode kept at or above {band.min}"
    elif d > 0 and p > band.max * d:
        d = min(decode.highest, math.ceil(p / band.max - 1e-9))
        if p > band.max * d:
            p = max(prefill.lowest, current.prefill, math.floor(band.max * d + 1e-9))
        message = f"prefill/decode kept at or below {band.max}"
    return (
        Pair(p, d),
        _step("ratio", p, p != desired.prefill, message),
        _step("ratio", d, d != desired.decode, message),
    )


def coordinate_budget(
    desired: Pair, current: Pair, prefill: PoolSpec, decode: PoolSpec, coordination: Coordination
) -> tuple[Pair, Step, Step] | None:
    """Cut increases to fit the GPU budget (it only ever lowers a desired count)."""
    budget = coordination.gpu_budget
    if budget is None:
        return None
    gp, gd = prefill.gpus_per_replica, decode.gpus_per_replica
    need = desired.prefill * gp + desired.decode * gd
    if need <= budget:
        message = f"{need} of {budget} GPUs"
        return (
            desired,
            _step("budget", desired.prefill, False, message),
            _step("budget", desired.decode, False, message),
        )
    base = Pair(min(desired.prefill, current.prefill), min(desired.decode, current.decode))
    room = budget - base.prefill * gp - base.decode * gd
    grants = _share(
        room,
        desired.prefill - base.prefill,
        desired.decode - base.decode,
        gp,
        gd,
        coordination.priority,
    )
    result = Pair(base.prefill + grants[0], base.decode + grants[1])
    used = result.prefill * gp + result.decode * gd
    message = f"{need} GPUs wanted, budget {budget}: {used} used ({coordination.priority} first)"
    return (
        result,
        _step("budget", result.prefill, result.prefill != desired.prefill, message),
        _step("budget", result.decode, result.decode != desired.decode, message),
    )


def _share(
    room: int, want_p: int, want_d: int, gp: int, gd: int, priority: BudgetPriority
) -> tuple[int, int]:
    """Replicas of growth granted to (prefill, decode) within ``room`` GPUs."""
    if room <= 0:
        return 0, 0
    if priority is BudgetPriority.PREFILL:
        p = min(want_p, room // gp)
        return p, min(want_d, (room - p * gp) // gd)
    if priority is BudgetPriority.DECODE:
        d = min(want_d, room // gd)
        return min(want_p, (room - d * gd) // gp), d
    share = room / (want_p * gp + want_d * gd)
    p, d = math.floor(want_p * share), math.floor(want_d * share)
    leftover = room - p * gp - d * gd  # hand out what flooring left, one replica at a time
    if p < want_p and leftover >= gp:
        p, leftover = p + 1, leftover - gp
    if d < want_d and leftover >= gd:
        d += 1
    return p, d


def _step(name: str, value: int, changed: bool, message: str) -> Step:
    if name == "ratio":
        return Step(name, value, Reason.RATIO_BOUND if changed else Reason.WITHIN_RATIO, message)
    return Step(name, value, Reason.GPU_BUDGET if changed else Reason.WITHIN_BUDGET, message)

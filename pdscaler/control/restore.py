"""Rebuild the engine's memory from the decision log, so a restart changes nothing.

From the rows of the last hour: each pool's recommendations (for the stabilization
windows), its applied changes (for the rate policies) and the size it last ran as
pdscaler knew it (for spotting changes made by someone else). Consecutive metric
failures and a running respect period for an outside change start over, which errs on
the side of holding.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import timedelta

from pdscaler.domain.decision import DecisionStatus
from pdscaler.domain.policy import Role
from pdscaler.domain.signals import PoolKey
from pdscaler.engine.history import PoolHistory
from pdscaler.store.decisions import HistoryRow


def rebuild(rows: Iterable[HistoryRow], keep: timedelta) -> dict[PoolKey, PoolHistory]:
    """``rows`` oldest first, as ``DecisionStore.recent`` returns them."""
    histories: dict[PoolKey, PoolHistory] = {}
    for row in rows:
        key = PoolKey(row.policy_namespace, row.policy_name, Role(row.role))
        history = histories.get(key, PoolHistory())
        if row.raw_recommendation is None:  # held (paused, outside change) or unreadable
            continue
        history = history.with_recommendation(row.decided_at, row.raw_recommendation, keep)
        applied = row.status == DecisionStatus.APPLIED.value
        # A pending row's write may or may not have happened (the process stopped between
        # the write and its record): it counts against the rate policies, and the size the
        # target runs is taken as it is found rather than as someone else's change.
        unknown = row.status == DecisionStatus.PENDING.value
        current, desired = row.current_replicas, row.desired_replicas
        if (applied or unknown) and current is not None and desired is not None:
            history = history.with_scale(row.decided_at, current, desired, keep)
            if unknown:
                history = replace(history, last_applied=None)
        elif row.current_replicas is not None:
            history = PoolHistory(
                history.recommendations, history.scale_events, last_applied=row.current_replicas
            )
        histories[key] = history
    return histories

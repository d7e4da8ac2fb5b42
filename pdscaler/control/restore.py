"""Rebuild the engine's memory from the decision log, so a restart changes nothing.

From the rows of the last hour: each pool's recommendations (for the stabilization
windows), its applied changes (for the rate policies) and the size it last ran as
pdscaler knew it (for spotting changes made by someone else). Decisions left pending
by a crash are reconciled first (:func:`reconcile`). Consecutive metric
failures and a running respect period for an outside change start over, which errs on
the side of holding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import timedelta

from pdscaler.domain.decision import DecisionStatus
from pdscaler.domain.policy import Role
from pdscaler.domain.signals import PoolKey
from pdscaler.engine.history import PoolHistory
from pdscaler.store.decisions import HistoryRow, Outcome


def rebuild(rows: Iterable[HistoryRow], keep: timedelta) -> dict[PoolKey, PoolHistory]:
    """``rows`` oldest first, as ``DecisionStore.recent`` returns them."""
    histories: dict[PoolKey, PoolHistory] = {}
    for row in rows:
        key = _pool(row)
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


def reconcile(
    rows: Sequence[HistoryRow], read_replicas: Callable[[PoolKey], int | None]
) -> list[Outcome]:
    """What became of each decision still ``pending`` in ``rows`` (oldest first): the
    process stopped, or lost the database, between its row and its outcome, so its
    ``/scale`` write may or may not have happened. The size the target was next seen at
    tells: the ``currentReplicas`` of the pool's next row, or for the pool's last row
    ``read_replicas`` now (None: cannot be read; the row stays pending). At the decided
    size: ``applied``; at another: ``abandoned``. The reason goes in ``error``."""
    by_pool: dict[PoolKey, list[HistoryRow]] = {}
    for row in rows:
        by_pool.setdefault(_pool(row), []).append(row)
    outcomes = []
    for pool, pool_rows in by_pool.items():
        for i, row in enumerate(pool_rows):
            if row.status != DecisionStatus.PENDING.value or row.tick_id is None:
                continue
            seen = next((r.current_replicas for r in pool_rows[i + 1 :]
                         if r.current_replicas is not None), None)  # fmt: skip
            when = "at the next decision"
            if seen is None and i == len(pool_rows) - 1:
                seen, when = read_replicas(pool), "at start-up"
            if seen is None or row.desired_replicas is None:
                continue
            applied = seen == row.desired_replicas
            status = DecisionStatus.APPLIED if applied else DecisionStatus.ABANDONED
            reason = (f"Reconciled: the target ran {seen} {when}, "
                      f"{'as decided' if applied else f'not {row.desired_replicas}'}")  # fmt: skip
            outcomes.append(Outcome(row.tick_id, Role(row.role), status, reason))
    return outcomes


def _pool(row: HistoryRow) -> PoolKey:
    return PoolKey(row.policy_namespace, row.policy_name, Role(row.role))

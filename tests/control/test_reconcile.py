"""Decisions a crash left pending: reconciled against the size their target was next seen
at, at start-up and when a replica takes the lead."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from pdscaler.control.clock import FakeClock
from pdscaler.domain.decision import DecisionRecord, DecisionStatus
from pdscaler.domain.errors import Unavailable
from pdscaler.domain.policy import Role
from pdscaler.domain.signals import PoolKey
from pdscaler.store.db import Database
from pdscaler.store.decisions import DecisionFilter
from tests.control.harness import NS, Harness
from tests.factories import decision

P = Role.PREFILL


def _row(h: Harness, record: DecisionRecord) -> DecisionRecord:
    page, _ = h.decisions.page(DecisionFilter(tick_id=record.tick_id, role=record.role), limit=1)
    return page[0].record


def _pending(h: Harness, seconds_ago: float, current: int, desired: int) -> DecisionRecord:
    at = h.clock.now() - timedelta(seconds=seconds_ago)
    record = decision(at, role=P, current=current, desired=desired)
    h.decisions.record_many([record])
    return record


def test_a_pending_write_the_target_shows_is_applied(db: Database, clock: FakeClock) -> None:
    h = Harness(db, clock)
    h.add_policy(prefill=3)  # the write of 2 -> 3 happened before the crash
    pending = _pending(h, 30, current=2, desired=3)

    h.new_controller().restore()

    row = _row(h, pending)
    assert row.status is DecisionStatus.APPLIED
    assert row.error == "Reconciled: the target ran 3 at start-up, as decided"


def test_a_pending_write_the_target_does_not_show_is_abandoned(
    db: Database, clock: FakeClock
) -> None:
    h = Harness(db, clock)
    h.add_policy(prefill=2)  # the process stopped before the write
    pending = _pending(h, 30, current=2, desired=3)

    h.new_controller().restore()

    row = _row(h, pending)
    assert row.status is DecisionStatus.ABANDONED
    assert row.error == "Reconciled: the target ran 2 at start-up, not 3"


def test_an_older_pending_row_is_judged_by_the_next_decision_of_its_pool(
    db: Database, clock: FakeClock
) -> None:
    h = Harness(db, clock)
    h.add_policy(prefill=5)
    applied = _pending(h, 90, current=2, desired=3)  # the next tick saw 3
    h.decisions.record_many([replace(decision(clock.now() - timedelta(seconds=60), role=P,
                                              current=3, desired=3),
                                     status=DecisionStatus.SKIPPED)])  # fmt: skip
    lost = _pending(h, 30, current=3, desired=4)  # now the target runs 5: someone else

    h.new_controller().restore()

    assert _row(h, applied).status is DecisionStatus.APPLIED
    assert _row(h, applied).error == "Reconciled: the target ran 3 at the next decision, as decided"
    assert _row(h, lost).status is DecisionStatus.ABANDONED


def test_a_target_that_cannot_be_read_leaves_the_row_pending(
    db: Database, clock: FakeClock
) -> None:
    h = Harness(db, clock)
    h.add_policy(prefill=3)
    pending = _pending(h, 30, current=2, desired=3)
    h.actuator.targets.clear()  # reads now fail: NotFound

    h.new_controller().restore()

    assert _row(h, pending).status is DecisionStatus.PENDING


def test_after_reconciling_the_next_tick_does_not_write_again(
    db: Database, clock: FakeClock
) -> None:
    h = Harness(db, clock)
    h.add_policy(prefill=8)
    _pending(h, 10, current=2, desired=8)  # written, then the crash
    h.controller = h.new_controller()
    h.controller.restore()
    h.observe(P, queuedPrefillTokens=200_000)  # the load that asked for 8
    h.observe(Role.DECODE, kvCacheUtilization=0.75)

    h.tick()

    assert h.actuator.writes == []  # already at 8: nothing written twice
    assert h.replicas(P) == 8


def test_an_unwritable_log_leaves_rows_pending_and_history_conservative(
    db: Database, clock: FakeClock
) -> None:
    h = Harness(db, clock)
    h.add_policy(prefill=3)
    pending = _pending(h, 30, current=2, desired=3)
    controller = h.new_controller()

    def down(*_args: object, **_kwargs: object) -> None:
        raise Unavailable("database unavailable")

    h.decisions.finish_many = down  # type: ignore[method-assign]
    controller.restore()  # logs, and rebuilds with the write counted as unknown

    assert controller.history(PoolKey(NS, "llama", P)).scale_events  # counts for the rates
    del h.decisions.finish_many
    assert _row(h, pending).status is DecisionStatus.PENDING

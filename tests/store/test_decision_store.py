"""The decision log: pending first, one outcome later; keyset pages over filters."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from pdscaler.control.clock import FakeClock
from pdscaler.domain.decision import Action, DecisionRecord, DecisionStatus
from pdscaler.domain.errors import NotFound
from pdscaler.domain.policy import Role, parse_policy
from pdscaler.store.db import Database
from pdscaler.store.decisions import DecisionFilter, DecisionStore
from pdscaler.store.policies import PolicyStore
from tests.factories import decision, policy_doc


@pytest.fixture
def store(db: Database, clock: FakeClock) -> DecisionStore:
    policies = PolicyStore(db)
    for name in ("llama", "qwen"):
        policies.create(parse_policy(policy_doc(name=name)), author="t", comment="",
                        now=clock.now())  # fmt: skip
    return DecisionStore(db)


def test_record_then_finish_round_trips_every_field(store: DecisionStore, clock: FakeClock) -> None:
    written = decision(clock.now(), current=2, desired=5)

    decision_id = store.record(written)
    pending = store.get(decision_id)
    clock.advance(1)
    store.finish(decision_id, DecisionStatus.APPLIED, now=clock.now(),
                 resource_version_written="101")  # fmt: skip
    applied = store.get(decision_id)

    assert pending.record == written
    assert pending.record.action is Action.SCALE_UP
    assert applied.record.status is DecisionStatus.APPLIED
    assert applied.resource_version_written == "101"
    assert applied.updated_at == clock.now()
    assert applied.record.decided_at == written.decided_at


def test_decision_for_an_unknown_policy_is_refused(store: DecisionStore, clock: FakeClock) -> None:
    with pytest.raises(NotFound):
        store.record(decision(clock.now(), policy="nope"))


def test_finish_of_unknown_decision_is_not_found(store: DecisionStore, clock: FakeClock) -> None:
    with pytest.raises(NotFound):
        store.finish(424242, DecisionStatus.FAILED, now=clock.now(), error="x")


def test_pages_walk_newest_first_without_gaps_or_repeats(
    store: DecisionStore, clock: FakeClock
) -> None:
    start = clock.now()
    positions = []
    for i in range(25):
        # Pairs share a timestamp, as prefill and decode of one tick do.
        at = start + timedelta(seconds=i // 2)
        positions.append((at, store.record(decision(at))))

    seen: list[int] = []
    after = None
    while True:
        page, after = store.page(DecisionFilter(), limit=4, after=after)
        seen += [d.id for d in page]
        if after is None:
            break

    assert seen == [row_id for _, row_id in sorted(positions, reverse=True)]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (DecisionFilter(policy="qwen"), {"qwen-decode-down"}),
        (DecisionFilter(role=Role.DECODE), {"llama-decode-none", "qwen-decode-down"}),
        (DecisionFilter(action=Action.SCALE_UP), {"llama-prefill-up"}),
        (DecisionFilter(status=DecisionStatus.FAILED), {"llama-decode-none"}),
        (DecisionFilter(namespace="elsewhere"), set()),
    ],
)
def test_filters_select_matching_decisions(
    store: DecisionStore, clock: FakeClock, where: DecisionFilter, expected: set[str]
) -> None:
    _seed_three(store, clock)

    page, _ = store.page(where, limit=100)

    assert {_label(d.record) for d in page} == expected


def test_time_range_is_inclusive_start_exclusive_end(
    store: DecisionStore, clock: FakeClock
) -> None:
    start = _seed_three(store, clock)

    page, _ = store.page(
        DecisionFilter(since=start + timedelta(minutes=1), until=start + timedelta(minutes=2)),
        limit=100,
    )

    assert {_label(d.record) for d in page} == {"llama-decode-none"}


def _seed_three(store: DecisionStore, clock: FakeClock) -> datetime:
    start = clock.now()
    store.record(decision(start, role=Role.PREFILL, current=1, desired=2))
    store.record(decision(start + timedelta(minutes=1), role=Role.DECODE, current=3, desired=3,
                          status=DecisionStatus.FAILED))  # fmt: skip
    store.record(decision(start + timedelta(minutes=2), policy="qwen", role=Role.DECODE,
                          current=4, desired=2))  # fmt: skip
    return start


def _label(record: DecisionRecord) -> str:
    short = {Action.SCALE_UP: "up", Action.SCALE_DOWN: "down", Action.NONE: "none"}
    return f"{record.policy_name}-{record.role.value}-{short[record.action]}"

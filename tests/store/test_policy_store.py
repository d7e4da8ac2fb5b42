"""Policy versions: every change is a new immutable version; stale writers lose cleanly."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from pdscaler.control.clock import FakeClock
from pdscaler.domain.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from pdscaler.domain.policy import Mode, Policy, parse_policy
from pdscaler.domain.versioning import ChangeKind, StoredPolicy
from pdscaler.store.db import Database
from pdscaler.store.policies import ApplyOutcome, PolicyStore
from tests.factories import policy_doc


@pytest.fixture
def store(db: Database) -> PolicyStore:
    return PolicyStore(db)


def _with_max(max_replicas: int) -> Policy:
    return parse_policy(policy_doc({"spec": {"prefill": {"maxReplicas": max_replicas}}}))


def _create(store: PolicyStore, clock: FakeClock) -> StoredPolicy:
    return store.create(parse_policy(policy_doc()), author="alice", comment="first",
                        now=clock.now())  # fmt: skip


def test_create_then_change_keeps_every_version(store: PolicyStore, clock: FakeClock) -> None:
    created = _create(store, clock)
    clock.advance(60)

    changed = store.change(
        "inference", "llama", ChangeKind.UPDATE, lambda _: _with_max(12),
        expected_version=1, author="bob", comment="more prefill", now=clock.now(),
    )  # fmt: skip

    assert (created.version, changed.version) == (1, 2)
    assert changed.updated_by == "bob"
    assert changed.created_at == created.created_at
    assert changed.updated_at == created.updated_at + timedelta(seconds=60)
    assert store.get("inference", "llama").policy.spec.prefill.max_replicas == 12
    history = store.versions("inference", "llama")
    assert [(v.version, v.change, v.author, v.comment) for v in history] == [
        (1, ChangeKind.CREATE, "alice", "first"),
        (2, ChangeKind.UPDATE, "bob", "more prefill"),
    ]
    assert history[0].document["spec"]["prefill"]["maxReplicas"] == 8


def test_create_twice_is_refused(store: PolicyStore, clock: FakeClock) -> None:
    _create(store, clock)

    with pytest.raises(AlreadyExists):
        _create(store, clock)

    assert len(store.versions("inference", "llama")) == 1


def test_stale_version_is_a_conflict_and_writes_nothing(
    store: PolicyStore, clock: FakeClock
) -> None:
    _create(store, clock)
    store.change("inference", "llama", ChangeKind.UPDATE, lambda _: _with_max(10),
                 expected_version=1, author="a", comment="", now=clock.now())  # fmt: skip

    with pytest.raises(Conflict, match="is at version 2"):
        store.change("inference", "llama", ChangeKind.UPDATE, lambda _: _with_max(11),
                     expected_version=1, author="b", comment="", now=clock.now())  # fmt: skip

    assert store.get("inference", "llama").policy.spec.prefill.max_replicas == 10
    assert len(store.versions("inference", "llama")) == 2


def test_failed_update_writes_nothing(store: PolicyStore, clock: FakeClock) -> None:
    _create(store, clock)

    def invalid(_: StoredPolicy) -> Policy:
        return parse_policy(policy_doc({"spec": {"prefill": {"maxReplicas": 0}}}))

    with pytest.raises(InvalidInput):
        store.change("inference", "llama", ChangeKind.UPDATE, invalid,
                     expected_version=None, author="a", comment="", now=clock.now())  # fmt: skip

    assert store.get("inference", "llama").version == 1
    assert len(store.versions("inference", "llama")) == 1


def test_concurrent_writers_on_one_version_exactly_one_wins(
    store: PolicyStore, clock: FakeClock
) -> None:
    _create(store, clock)
    outcomes: list[str] = []
    start = threading.Barrier(4)

    def writer(max_replicas: int) -> None:
        start.wait()
        try:
            store.change("inference", "llama", ChangeKind.UPDATE,
                         lambda _: _with_max(max_replicas), expected_version=1,
                         author=f"w{max_replicas}", comment="", now=clock.now())  # fmt: skip
            outcomes.append("won")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=writer, args=(n,)) for n in (9, 10, 11, 12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(outcomes) == ["conflict", "conflict", "conflict", "won"]
    assert [v.version for v in store.versions("inference", "llama")] == [1, 2]


def test_delete_keeps_history_and_recreate_continues_it(
    store: PolicyStore, clock: FakeClock
) -> None:
    _create(store, clock)

    store.delete("inference", "llama", expected_version=1, author="admin", comment="gone",
                 now=clock.now())  # fmt: skip

    with pytest.raises(NotFound):
        store.get("inference", "llama")
    assert store.all() == []
    assert [v.change for v in store.versions("inference", "llama")] == [
        ChangeKind.CREATE,
        ChangeKind.DELETE,
    ]
    again = _create(store, clock)
    assert again.version == 3
    assert [v.change for v in store.versions("inference", "llama")][-1] is ChangeKind.CREATE


def test_apply_creates_updates_and_skips_identical(store: PolicyStore, clock: FakeClock) -> None:
    policy = parse_policy(policy_doc())

    outcomes = [
        store.apply(policy, author="git", comment="", now=clock.now())[1],
        store.apply(policy, author="git", comment="", now=clock.now())[1],
        store.apply(policy.with_mode(Mode.SHADOW), author="git", comment="", now=clock.now())[1],
    ]

    assert outcomes == [ApplyOutcome.CREATED, ApplyOutcome.UNCHANGED, ApplyOutcome.UPDATED]
    assert store.get("inference", "llama").version == 2


def test_lists_by_namespace(store: PolicyStore, clock: FakeClock) -> None:
    for namespace, name in (("a", "one"), ("b", "two"), ("a", "three")):
        store.create(parse_policy(policy_doc(name=name, namespace=namespace)), author="x",
                     comment="", now=clock.now())  # fmt: skip

    assert [p.policy.key for p in store.all("a")] == [("a", "one"), ("a", "three")]
    assert len(store.all()) == 3


def test_unknown_version_is_not_found(store: PolicyStore, clock: FakeClock) -> None:
    _create(store, clock)

    with pytest.raises(NotFound, match="no version 7"):
        store.version("inference", "llama", 7)
    with pytest.raises(NotFound):
        store.versions("inference", "nope")

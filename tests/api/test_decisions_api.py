"""Decision log over HTTP: filters, signed cursors, one decision, export."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from pdscaler.api.schemas import DecisionOut, DecisionPage
from pdscaler.control.clock import FakeClock
from pdscaler.domain.decision import DecisionStatus
from pdscaler.domain.policy import Role
from pdscaler.store.db import Database
from pdscaler.store.decisions import DecisionStore
from tests.conftest import auth
from tests.factories import decision, policy_doc

VIEWER = auth("viewer")


@pytest.fixture
def ids(client: TestClient, db: Database, clock: FakeClock) -> list[int]:
    """Seven decisions: llama prefill/decode over three ticks, and one for qwen."""
    for name in ("llama", "qwen"):
        client.post("/v1/policies", json=policy_doc(name=name), headers=auth("editor"))
    store = DecisionStore(db)
    written = []
    for tick in range(3):
        at = clock.now() + timedelta(seconds=15 * tick)
        for role in Role:
            written.append(store.record(decision(at, role=role, current=2, desired=2 + tick)))
    written.append(store.record(decision(clock.now(), policy="qwen", current=4, desired=1,
                                         status=DecisionStatus.APPLIED)))  # fmt: skip
    return written


def test_cursor_pages_reach_every_decision_once(client: TestClient, ids: list[int]) -> None:
    seen: list[int] = []
    url = "/v1/decisions?limit=2&policy=llama"
    while url:
        body = client.get(url, headers=VIEWER).json()
        seen += [d["id"] for d in body["items"]]
        url = f"/v1/decisions?limit=2&policy=llama&cursor={body['nextCursor']}" if body[
            "nextCursor"] else ""  # fmt: skip

    assert sorted(seen) == sorted(ids[:6])
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize(
    ("query", "count"),
    [
        ("", 7),
        ("policy=qwen", 1),
        ("namespace=inference&policy=llama&role=decode", 3),
        ("action=scale_down", 1),
        ("action=none", 2),
        ("status=applied", 1),
        ("since=2026-03-01T12:00:15Z", 4),
        ("since=2026-03-01T12:00:15Z&until=2026-03-01T12:00:30Z", 2),
        ("until=2026-03-01T12:00:00", 0),
    ],
)
def test_filters(client: TestClient, ids: list[int], query: str, count: int) -> None:
    body = client.get(f"/v1/decisions?{query}", headers=VIEWER).json()

    assert len(body["items"]) == count
    assert body["nextCursor"] is None


def test_get_one_shows_the_whole_chain(client: TestClient, ids: list[int]) -> None:
    body = client.get(f"/v1/decisions/{ids[-1]}", headers=VIEWER).json()

    assert body["policyName"] == "qwen"
    assert (body["currentReplicas"], body["desiredReplicas"], body["action"]) == (
        4,
        1,
        "scale_down",
    )
    assert [s["reason"] for s in body["steps"]] == ["QueueTarget", "ScaleUpLimit"]
    assert body["signals"]["queuedPrefillTokens"]["quality"] == "fresh"
    assert body["target"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                              "name": "qwen-prefill"}  # fmt: skip


def test_missing_decision_is_404(client: TestClient, ids: list[int]) -> None:
    assert client.get("/v1/decisions/999999", headers=VIEWER).status_code == 404


def test_export_json_lines(client: TestClient, ids: list[int]) -> None:
    response = client.get("/v1/decisions/export?format=jsonl&policy=llama", headers=VIEWER)

    rows = [json.loads(line) for line in response.text.splitlines()]
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert sorted(r["id"] for r in rows) == sorted(ids[:6])


def test_export_csv(client: TestClient, ids: list[int]) -> None:
    response = client.get("/v1/decisions/export?format=csv&role=prefill", headers=VIEWER)

    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert response.headers["content-type"].startswith("text/csv")
    assert len(rows) == 4
    assert rows[0]["steps"].startswith("recommend=")
    assert {r["policyName"] for r in rows} == {"llama", "qwen"}


def test_export_of_nothing_is_just_the_header(client: TestClient, ids: list[int]) -> None:
    response = client.get("/v1/decisions/export?format=csv&policy=nobody", headers=VIEWER)

    assert response.text.strip().startswith("id,decidedAt")
    assert len(response.text.strip().splitlines()) == 1


def test_served_documents_conform_to_the_declared_schema(
    client: TestClient, ids: list[int], db: Database
) -> None:
    page = client.get("/v1/decisions?limit=3", headers=VIEWER).json()
    one = client.get(f"/v1/decisions/{ids[0]}", headers=VIEWER).json()
    lines = client.get("/v1/decisions/export", headers=VIEWER).text.splitlines()

    DecisionPage.model_validate(page)
    parsed = DecisionOut.model_validate(one)
    for line in lines:
        DecisionOut.model_validate_json(line)
    stored = DecisionStore(db).get(ids[0])
    assert parsed.decided_at == stored.record.decided_at
    assert [s.model_dump() for s in parsed.steps] == [
        {"name": s.name, "value": s.value, "reason": s.reason, "message": s.message}
        for s in stored.record.steps
    ]
    assert parsed.signals == stored.record.signals
    assert parsed.resource_version_read == stored.record.resource_version
    assert one["decidedAt"].endswith("Z")


def test_a_log_lines_tick_id_finds_its_decisions(client: TestClient, ids: list[int]) -> None:
    one = client.get(f"/v1/decisions/{ids[2]}", headers=VIEWER).json()

    body = client.get(f"/v1/decisions?tickId={one['tickId']}", headers=VIEWER).json()

    assert [d["id"] for d in body["items"]] == [ids[2]]
    assert client.get("/v1/decisions?tickId=" + "x" * 37, headers=VIEWER).status_code == 422

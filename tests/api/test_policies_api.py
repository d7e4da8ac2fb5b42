"""Policy routes over HTTP: CRUD, versions, diff, rollback, pause/resume, concurrency."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import yaml
from fastapi.testclient import TestClient

from pdscaler.control.clock import FakeClock
from pdscaler.domain.decision import Step
from pdscaler.domain.policy import Role
from pdscaler.domain.reasons import Reason
from pdscaler.store.db import Database
from pdscaler.store.decisions import DecisionStore
from tests.conftest import auth
from tests.factories import decision, policy_doc

EDITOR = auth("editor")
URL = "/v1/policies/inference/llama"


def _create(client: TestClient, doc: dict[str, object] | None = None) -> None:
    response = client.post("/v1/policies", json=doc or policy_doc(), headers=EDITOR)
    assert response.status_code == 201, response.json()


def test_create_returns_the_policy_with_its_version_and_etag(client: TestClient) -> None:
    response = client.post("/v1/policies?comment=initial", json=policy_doc(), headers=EDITOR)

    assert response.status_code == 201
    assert response.headers["ETag"] == '"1"'
    assert response.headers["Location"] == URL
    body = response.json()
    assert body["metadata"]["resourceVersion"] == "1"
    assert body["status"]["updatedBy"] == "editor-user"
    assert body["spec"]["prefill"]["maxReplicas"] == 8
    assert client.get(URL, headers=EDITOR).json() == body


def test_create_accepts_yaml(client: TestClient) -> None:
    body = yaml.safe_dump(policy_doc(name="from-yaml"))

    response = client.post(
        "/v1/policies", content=body, headers={**EDITOR, "Content-Type": "application/yaml"}
    )

    assert response.status_code == 201
    assert response.json()["metadata"]["name"] == "from-yaml"


def test_replace_with_current_etag_makes_a_new_version(client: TestClient) -> None:
    _create(client)

    response = client.put(
        URL,
        json=policy_doc({"spec": {"decode": {"maxReplicas": 24}}}),
        headers={**EDITOR, "If-Match": '"1"'},
    )

    assert response.status_code == 200
    assert response.headers["ETag"] == '"2"'
    assert response.json()["spec"]["decode"]["maxReplicas"] == 24


def test_replace_with_stale_etag_is_409_and_changes_nothing(client: TestClient) -> None:
    _create(client)
    client.put(URL, json=policy_doc({"spec": {"decode": {"maxReplicas": 24}}}), headers=EDITOR)

    stale = client.put(
        URL,
        json=policy_doc({"spec": {"decode": {"maxReplicas": 2}}}),
        headers={**EDITOR, "If-Match": '"1"'},
    )

    assert stale.status_code == 409
    assert stale.json()["code"] == "Conflict"
    assert client.get(URL, headers=EDITOR).json()["spec"]["decode"]["maxReplicas"] == 24


def test_stale_resource_version_in_the_body_is_409(client: TestClient) -> None:
    _create(client)
    client.put(URL, json=policy_doc({"spec": {"coldStartSeconds": 60}}), headers=EDITOR)

    stale = client.put(URL, json=policy_doc(resourceVersion="1"), headers=EDITOR)

    assert stale.status_code == 409


def test_if_match_and_body_version_must_agree(client: TestClient) -> None:
    _create(client)

    response = client.put(
        URL, json=policy_doc(resourceVersion="1"), headers={**EDITOR, "If-Match": '"2"'}
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "If-Match"


def test_merge_patch_changes_only_what_it_names(client: TestClient) -> None:
    _create(client)
    before = client.get(URL, headers=EDITOR).json()["spec"]

    response = client.patch(
        URL,
        json={"spec": {"mode": "shadow", "prefill": {"behavior": None}}},
        headers={**EDITOR, "Content-Type": "application/merge-patch+json", "If-Match": '"1"'},
    )

    assert response.status_code == 200
    spec = response.json()["spec"]
    assert spec["mode"] == "shadow"
    assert spec["decode"] == before["decode"]
    assert spec["prefill"] == before["prefill"]


def test_patch_that_breaks_the_policy_is_422_naming_the_field(client: TestClient) -> None:
    _create(client)

    response = client.patch(URL, json={"spec": {"prefill": {"minReplicas": 99}}}, headers=EDITOR)

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "spec.prefill.minReplicas"
    assert client.get(URL, headers=EDITOR).headers["ETag"] == '"1"'


def test_name_in_body_must_match_the_url(client: TestClient) -> None:
    _create(client)

    response = client.put(URL, json=policy_doc(name="other"), headers=EDITOR)

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "metadata.name"


def test_versions_diff_and_rollback(client: TestClient) -> None:
    _create(client)
    client.patch(URL + "?comment=bigger", json={"spec": {"prefill": {"maxReplicas": 12}}},
                 headers=EDITOR)  # fmt: skip

    diff = client.get(URL + "/diff?from=1&to=2", headers=EDITOR).json()
    rolled = client.post(URL + "/rollback", json={"version": 1}, headers=EDITOR)
    versions = client.get(URL + "/versions", headers=EDITOR).json()["items"]

    assert diff["changes"] == [
        {"path": "spec.prefill.maxReplicas", "op": "replace", "old": 8, "new": 12}
    ]
    assert "-    maxReplicas: 8\n+    maxReplicas: 12" in diff["unified"]
    assert rolled.status_code == 200
    assert rolled.json()["spec"]["prefill"]["maxReplicas"] == 8
    assert [(v["version"], v["change"], v["comment"]) for v in versions] == [
        (1, "create", ""),
        (2, "patch", "bigger"),
        (3, "rollback", "rollback to version 1"),
    ]
    one = client.get(URL + "/versions/2", headers=EDITOR).json()
    assert one["document"]["spec"]["prefill"]["maxReplicas"] == 12


def test_diff_defaults_to_the_latest_version(client: TestClient) -> None:
    _create(client)
    client.patch(URL, json={"spec": {"coldStartSeconds": 200}}, headers=EDITOR)

    diff = client.get(URL + "/diff?from=1", headers=EDITOR).json()

    assert (diff["fromVersion"], diff["toVersion"]) == (1, 2)
    assert diff["changes"][0]["path"] == "spec.coldStartSeconds"


def test_rollback_to_missing_version_is_404(client: TestClient) -> None:
    _create(client)

    assert client.post(URL + "/rollback", json={"version": 9}, headers=EDITOR).status_code == 404


def test_pause_then_resume_restores_the_previous_mode(client: TestClient) -> None:
    _create(client, policy_doc({"spec": {"mode": "shadow"}}))

    paused = client.post(URL + "/pause", json={"comment": "incident 42"}, headers=EDITOR)
    resumed = client.post(URL + "/resume", headers=EDITOR)

    assert paused.json()["status"]["mode"] == "paused"
    assert resumed.json()["status"]["mode"] == "shadow"
    changes = [
        (v["change"], v["comment"])
        for v in client.get(URL + "/versions", headers=EDITOR).json()["items"]
    ]
    assert changes[1:] == [("pause", "incident 42"), ("resume", "")]


def test_delete_needs_admin_and_keeps_history(client: TestClient) -> None:
    _create(client)

    assert client.delete(URL, headers=EDITOR).status_code == 403
    assert client.delete(URL, headers=auth("admin")).status_code == 204
    assert client.get(URL, headers=EDITOR).status_code == 404
    versions = client.get(URL + "/versions", headers=EDITOR).json()["items"]
    assert [v["change"] for v in versions] == ["create", "delete"]
    assert versions[-1]["author"] == "admin-user"


def test_list_filters_by_namespace(client: TestClient) -> None:
    _create(client)
    _create(client, policy_doc(namespace="other"))

    names = [
        p["metadata"]["namespace"]
        for p in client.get("/v1/policies?namespace=other", headers=EDITOR).json()["items"]
    ]

    assert names == ["other"]
    assert len(client.get("/v1/policies", headers=EDITOR).json()["items"]) == 2


def test_validate_reports_problems_without_saving(client: TestClient) -> None:
    bad = policy_doc({"spec": {"decode": {"minReplicas": 40}}})

    invalid = client.post("/v1/policies/validate", json=bad, headers=auth("viewer"))
    valid = client.post("/v1/policies/validate", json=policy_doc(), headers=auth("viewer"))

    assert invalid.status_code == 200
    assert invalid.json()["valid"] is False
    assert invalid.json()["errors"][0]["field"] == "spec.decode.minReplicas"
    assert valid.json() == {"valid": True, "errors": []}
    assert client.get("/v1/policies", headers=EDITOR).json()["items"] == []


def test_a_change_that_changes_nothing_writes_no_version(client: TestClient) -> None:
    _create(client)
    current = client.get(URL, headers=EDITOR).json()
    document = {k: current[k] for k in ("apiVersion", "kind", "spec")}
    document["metadata"] = {"name": "llama", "namespace": "inference"}

    responses = [
        client.put(URL, json=document, headers=EDITOR),
        client.patch(URL, json={}, headers=EDITOR),
        client.post(URL + "/pause", headers=EDITOR),
        client.post(URL + "/pause", headers=EDITOR),
    ]

    assert [r.headers["ETag"] for r in responses] == ['"1"', '"1"', '"2"', '"2"']
    versions = client.get(URL + "/versions", headers=EDITOR).json()["items"]
    assert [v["change"] for v in versions] == ["create", "pause"]


def test_patch_takes_resource_version_as_a_number_or_a_string(client: TestClient) -> None:
    _create(client)

    as_number = client.patch(
        URL, json={"metadata": {"resourceVersion": 1}, "spec": {"coldStartSeconds": 61}},
        headers=EDITOR,
    )  # fmt: skip
    stale = client.patch(
        URL, json={"metadata": {"resourceVersion": "1"}, "spec": {"coldStartSeconds": 62}},
        headers=EDITOR,
    )  # fmt: skip

    assert as_number.status_code == 200
    assert "resourceVersion" not in client.get(URL + "/versions/2", headers=EDITOR).json()[
        "document"]["metadata"]  # fmt: skip
    assert stale.status_code == 409


def test_pause_and_resume_honour_if_match(client: TestClient) -> None:
    _create(client)
    client.patch(URL, json={"spec": {"coldStartSeconds": 61}}, headers=EDITOR)

    stale_pause = client.post(URL + "/pause", headers={**EDITOR, "If-Match": '"1"'})
    paused = client.post(URL + "/pause", headers={**EDITOR, "If-Match": '"2"'})
    stale_resume = client.post(URL + "/resume", headers={**EDITOR, "If-Match": '"2"'})

    assert (stale_pause.status_code, paused.status_code, stale_resume.status_code) == (
        409,
        200,
        409,
    )


def test_recreated_policy_has_a_new_creation_time(client: TestClient, clock: FakeClock) -> None:
    _create(client)
    client.delete(URL, headers=auth("admin"))
    clock.advance(3600)

    _create(client)

    created = client.get(URL, headers=EDITOR).json()["metadata"]["creationTimestamp"]
    assert created.startswith("2026-03-01T13:00:00")


def test_an_unknown_capacity_profile_is_refused_on_save(client: TestClient) -> None:
    doc = policy_doc({"spec": {"prefill": {"metrics": [
        {"type": "Capacity", "profile": "/nowhere/profile"}]}}})  # fmt: skip

    response = client.post("/v1/policies", json=doc, headers=EDITOR)

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "spec.prefill.metrics[0].profile"
    assert client.get("/v1/policies", headers=EDITOR).json()["items"] == []


def test_status_repeats_what_keeps_the_loop_from_acting(
    client: TestClient, db: Database, clock: FakeClock
) -> None:
    _create(client)
    unplaced = Step("schedule", 4, Reason.UNSCHEDULABLE, "2 pods cannot be scheduled: ...")
    owned = Step("mode", 3, Reason.MANAGED_ELSEWHERE, "HPA inference/llama-decode also scales")
    store = DecisionStore(db)
    store.record(replace(decision(clock.now(), role=Role.PREFILL), steps=(unplaced,)))
    store.record(replace(decision(clock.now(), role=Role.DECODE), steps=(owned,)))

    warnings = client.get(URL, headers=EDITOR).json()["status"]["warnings"]

    assert warnings == [f"prefill: {unplaced.message}", f"decode: {owned.message}"]


def test_status_forgets_a_problem_the_last_decision_no_longer_has(
    client: TestClient, db: Database, clock: FakeClock
) -> None:
    _create(client)
    unplaced = Step("schedule", 4, Reason.UNSCHEDULABLE, "2 pods cannot be scheduled: ...")
    store = DecisionStore(db)
    store.record(replace(decision(clock.now(), role=Role.PREFILL), steps=(unplaced,)))
    store.record(decision(clock.now() + timedelta(seconds=5), role=Role.PREFILL))

    assert client.get(URL, headers=EDITOR).json()["status"]["warnings"] == []

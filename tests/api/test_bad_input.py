"""Bad input gets a 4xx that names the problem, never a 500, and writes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from pdscaler.store.db import Database
from pdscaler.store.models import DecisionRow, PolicyRow, PolicyVersionRow
from tests.conftest import auth
from tests.factories import policy_doc

P = "/v1/policies/inference/llama"
JSON = {"Content-Type": "application/json"}
YAML = {"Content-Type": "application/yaml"}


@dataclass(frozen=True)
class Bad:
    name: str
    method: str
    url: str
    status: int
    says: str  # a fragment of the message or of a field name
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))


def _json(doc: object) -> bytes:
    return json.dumps(doc).encode()


TOO_BIG = b'{"x": "' + b"a" * (1024 * 1024 + 10) + b'"}'
CASES = [
    Bad("malformed JSON", "POST", "/v1/policies", 400, "line 1 column 2", b"{metadata: 1"),
    Bad("truncated JSON", "PUT", P, 400, "malformed JSON", _json(policy_doc())[:-5]),
    Bad("malformed YAML", "POST", "/v1/policies", 400, "malformed YAML",
        b"metadata: [unclosed\n  spec: {", YAML),
    Bad("two YAML documents", "POST", "/v1/policies", 400, "one YAML document",
        b"a: 1\n---\nb: 2\n", YAML),
    Bad("YAML scalar", "POST", "/v1/policies", 422, "must be an object", b"just text\n", YAML),
    Bad("invalid UTF-8", "POST", "/v1/policies", 400, "UTF-8", b'{"metadata": "\xff\xfe"}'),
    Bad("empty body", "POST", "/v1/policies", 400, "empty", b""),
    Bad("NaN", "POST", "/v1/policies", 400, "NaN",
        _json(policy_doc()).replace(b"0.75", b"NaN")),
    Bad("unsupported media type", "POST", "/v1/policies", 415, "text/plain",
        _json(policy_doc()), {"Content-Type": "text/plain"}),
    Bad("wrong type", "POST", "/v1/policies", 422, "spec.prefill.maxReplicas",
        _json(policy_doc({"spec": {"prefill": {"maxReplicas": [3]}}}))),
    Bad("unknown field", "POST", "/v1/policies", 422, "spec.decode.replicas",
        _json(policy_doc({"spec": {"decode": {"replicas": 3}}}))),
    Bad("body too large", "POST", "/v1/policies", 413, "exceeds", TOO_BIG),
    Bad("patch not an object", "PATCH", P, 422, "must be an object", b"[1, 2]"),
    Bad("patch with bad metadata", "PATCH", P, 422, "metadata", b'{"metadata": "x"}'),
    Bad("rollback malformed", "POST", P + "/rollback", 400, "malformed JSON", b"{version: 1}"),
    Bad("rollback wrong type", "POST", P + "/rollback", 422, "version", b'{"version": "one"}'),
    Bad("rollback huge version", "POST", P + "/rollback", 422, "version",
        b'{"version": 1000000000000000000000000000000}'),
    Bad("rollback comment with NUL", "POST", P + "/rollback", 422, "comment",
        b'{"version": 1, "comment": "a\\u0000"}'),
    Bad("rollback unknown field", "POST", P + "/rollback", 422, "verison",
        b'{"verison": 1}'),
    Bad("If-Match garbage", "PUT", P, 422, "If-Match", _json(policy_doc()),
        {**JSON, "If-Match": "yesterday"}),
    Bad("SQL in a filter", "GET", "/v1/decisions?policy=x%27%20OR%201%3D1--", 422,
        "query.policy"),
    Bad("SQL in a namespace filter", "GET", "/v1/policies?namespace=%27%3B%20DROP%20TABLE",
        422, "query.namespace"),
    Bad("bad time", "GET", "/v1/decisions?since=yesterday", 422, "query.since"),
    Bad("inverted time range", "GET",
        "/v1/decisions?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z", 422, "since"),
    Bad("unknown enum", "GET", "/v1/decisions?role=router", 422, "query.role"),
    Bad("limit too large", "GET", "/v1/decisions?limit=100000", 422, "query.limit"),
    Bad("tampered cursor", "GET", "/v1/decisions?cursor=AAAAAAAAAAAAAAAAAAAAAFsiMjAyNiJd",
        422, "signature"),
    Bad("cursor garbage", "GET", "/v1/decisions?cursor=%%%%", 422, "cursor"),
    Bad("bad path name", "GET", "/v1/policies/Inference/llama", 422, "path.namespace"),
    Bad("version not a number", "GET", P + "/versions/latest", 422, "path.version"),
    Bad("huge decision id", "GET", "/v1/decisions/99999999999999999999999", 422,
        "path.decision_id"),
    Bad("export format", "GET", "/v1/decisions/export?format=xml", 422, "query.format"),
]  # fmt: skip


def _counts(db: Database) -> tuple[int, ...]:
    with db.transaction() as session:
        return tuple(
            session.scalar(select(func.count()).select_from(model)) or 0
            for model in (PolicyRow, PolicyVersionRow, DecisionRow)
        )


@pytest.fixture
def seeded(client: TestClient) -> TestClient:
    assert client.post("/v1/policies", json=policy_doc(), headers=auth("admin")).status_code == 201
    return client


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_is_a_named_4xx_and_writes_nothing(
    seeded: TestClient, db: Database, case: Bad
) -> None:
    before = _counts(db)

    response = seeded.request(
        case.method, case.url, content=case.content, headers={**auth("admin"), **case.headers}
    )

    assert response.status_code == case.status, response.text
    body = response.json()
    named = body["message"] + " " + " ".join(e["field"] for e in body["errors"])
    assert case.says in named, body
    assert _counts(db) == before


def test_chunked_body_without_length_is_still_limited(seeded: TestClient, db: Database) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(300):
            yield b" " * 4096

    before = _counts(db)
    response = seeded.post("/v1/policies", content=chunks(), headers={**auth("admin"), **JSON})

    assert response.status_code == 413
    assert _counts(db) == before


def test_sql_metacharacters_in_free_text_are_stored_verbatim(seeded: TestClient) -> None:
    comment = "'; DROP TABLE policies; --"

    response = seeded.patch(
        P, params={"comment": comment}, json={"spec": {"coldStartSeconds": 60}},
        headers=auth("admin"),
    )  # fmt: skip

    assert response.status_code == 200
    versions = seeded.get(P + "/versions", headers=auth("admin")).json()["items"]
    assert versions[-1]["comment"] == comment


def test_yaml_tags_are_not_executed(seeded: TestClient) -> None:
    body = yaml.safe_dump(policy_doc(name="tagged")).replace(
        "name: tagged", "name: !!python/object/apply:os.system ['true']"
    )

    response = seeded.post("/v1/policies", content=body, headers={**auth("admin"), **YAML})

    assert response.status_code == 400
    assert "malformed YAML" in response.json()["message"]


NUL_CASES = [
    ("NUL in a string value", "POST", "/v1/policies",
     _json(policy_doc({"metadata": {"annotations": {"note": "a\u0000b"}}})),
     "metadata.annotations.note"),
    ("NUL in a key", "POST", "/v1/policies",
     _json(policy_doc({"metadata": {"labels": {"a\u0000": "b"}}})), "metadata.labels"),
    ("NUL in a comment", "PATCH", P + "?comment=a%00b", b'{"spec": {}}', "query.comment"),
    ("NUL in a YAML document", "POST", "/v1/policies",
     yaml.safe_dump(policy_doc({"metadata": {"annotations": {"n": "\u0000"}}})).encode(),
     "annotations"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "method", "url", "content", "field"), NUL_CASES,
                         ids=[c[0] for c in NUL_CASES])  # fmt: skip
def test_nul_characters_are_refused_not_stored(
    seeded: TestClient, db: Database, name: str, method: str, url: str, content: bytes,
    field: str,
) -> None:  # fmt: skip
    before = _counts(db)
    headers = {**auth("admin"), **(YAML if "YAML" in name else JSON)}

    response = seeded.request(method, url, content=content, headers=headers)

    assert response.status_code == 422, response.text
    assert field in " ".join(e["field"] for e in response.json()["errors"])
    assert _counts(db) == before

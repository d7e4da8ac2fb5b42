"""Auth on every route: the table below must name every route the API serves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pdscaler.api.app import create_app
from pdscaler.config import Role, Settings
from pdscaler.control.clock import FakeClock
from pdscaler.store.db import Database
from pdscaler.wiring import build_app, build_services
from tests.conftest import auth
from tests.factories import policy_doc

P = "/v1/policies/inference/llama"


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # as in the OpenAPI document
    url: str  # a concrete URL for it
    needs: Role | None  # None: open to everyone
    json: Any = None


ROUTES = [
    Route("GET", "/healthz", "/healthz", None),
    Route("GET", "/readyz", "/readyz", None),
    Route("GET", "/metrics", "/metrics", None),
    Route("GET", "/v1/policies", "/v1/policies", Role.VIEWER),
    Route("POST", "/v1/policies", "/v1/policies", Role.EDITOR, policy_doc(name="other")),
    Route("POST", "/v1/policies/validate", "/v1/policies/validate", Role.VIEWER, policy_doc()),
    Route("GET", "/v1/policies/{namespace}/{name}", P, Role.VIEWER),
    Route("PUT", "/v1/policies/{namespace}/{name}", P, Role.EDITOR, policy_doc()),
    Route("PATCH", "/v1/policies/{namespace}/{name}", P, Role.EDITOR, {"spec": {}}),
    Route("DELETE", "/v1/policies/{namespace}/{name}", P, Role.ADMIN),
    Route("GET", "/v1/policies/{namespace}/{name}/versions", P + "/versions", Role.VIEWER),
    Route("GET", "/v1/policies/{namespace}/{name}/versions/{version}", P + "/versions/1",
          Role.VIEWER),
    Route("GET", "/v1/policies/{namespace}/{name}/diff", P + "/diff?from=1", Role.VIEWER),
    Route("POST", "/v1/policies/{namespace}/{name}/rollback", P + "/rollback", Role.EDITOR,
          {"version": 1}),
    Route("POST", "/v1/policies/{namespace}/{name}/pause", P + "/pause", Role.EDITOR),
    Route("POST", "/v1/policies/{namespace}/{name}/resume", P + "/resume", Role.EDITOR),
    Route("GET", "/v1/policies/{namespace}/{name}/explain", P + "/explain", Role.VIEWER),
    Route("GET", "/v1/policies/{namespace}/{name}/forecasts", P + "/forecasts", Role.VIEWER),
    Route("GET", "/v1/decisions", "/v1/decisions", Role.VIEWER),
    Route("GET", "/v1/decisions/export", "/v1/decisions/export", Role.VIEWER),
    Route("GET", "/v1/decisions/{decision_id}", "/v1/decisions/1", Role.VIEWER),
]  # fmt: skip
PROTECTED = [r for r in ROUTES if r.needs is not None]


def _ids(route: Route) -> str:
    return f"{route.method} {route.path}"


def test_the_table_covers_every_route(settings: Settings, db: Database) -> None:
    document = create_app(build_services(settings, db), max_body_bytes=1024).openapi()
    served = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }

    assert served == {(r.method, r.path) for r in ROUTES}


@pytest.fixture
def seeded(client: TestClient) -> TestClient:
    assert client.post("/v1/policies", json=policy_doc(), headers=auth("admin")).status_code == 201
    return client


def _call(client: TestClient, route: Route, headers: dict[str, str]) -> int:
    return client.request(route.method, route.url, json=route.json, headers=headers).status_code


@pytest.mark.parametrize("route", PROTECTED, ids=_ids)
def test_no_token_is_401(seeded: TestClient, route: Route) -> None:
    response = seeded.request(route.method, route.url, json=route.json)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("route", PROTECTED, ids=_ids)
@pytest.mark.parametrize("header", ["Bearer nope", "Basic dXNlcjpwdw==", "Bearer ", "nope"])
def test_bad_credentials_are_401(seeded: TestClient, route: Route, header: str) -> None:
    assert _call(seeded, route, {"Authorization": header}) == 401


@pytest.mark.parametrize("route", PROTECTED, ids=_ids)
@pytest.mark.parametrize("role", list(Role))
def test_each_role_reaches_exactly_its_routes(seeded: TestClient, route: Route, role: Role) -> None:
    assert route.needs is not None

    status = _call(seeded, route, auth(role.value))

    if role.allows(route.needs):
        assert status not in (401, 403), status
    else:
        assert status == 403


@pytest.mark.parametrize("route", [r for r in ROUTES if r.needs is None], ids=_ids)
def test_open_routes_need_no_token(seeded: TestClient, route: Route) -> None:
    assert _call(seeded, route, {}) == 200


def test_anonymous_reads_open_reads_only(
    settings: Settings, db: Database, clock: FakeClock
) -> None:
    anonymous = settings.model_copy(
        update={"api": settings.api.model_copy(update={"anonymous_reads": True})}
    )
    with TestClient(build_app(anonymous, db, clock)) as client:
        client.post("/v1/policies", json=policy_doc(), headers=auth("editor"))
        for route in PROTECTED:
            status = _call(client, route, {})
            assert (status == 401) is (route.needs is not Role.VIEWER), (route, status)
        # A wrong token is still refused, even where anonymous reads are allowed.
        assert client.get("/v1/policies", headers={"Authorization": "Bearer x"}).status_code == 401


def test_changes_record_who_made_them(seeded: TestClient) -> None:
    seeded.post(P + "/pause", headers=auth("editor"))

    versions = seeded.get(P + "/versions", headers=auth("viewer")).json()["items"]

    assert [v["author"] for v in versions] == ["admin-user", "editor-user"]

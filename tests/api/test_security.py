"""The API's closed defaults: no cross-origin access, no token echoed, tokens compared as
digests."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import TOKENS, auth


def test_cross_origin_requests_get_no_cors_grant(client: TestClient) -> None:
    origin = {"Origin": "https://evil.example"}
    preflight = client.options("/v1/policies", headers={
        **origin, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})  # fmt: skip
    simple = client.get("/v1/policies", headers={**origin, **auth("viewer")})

    for response in (preflight, simple):
        assert "access-control-allow-origin" not in response.headers
        assert "access-control-allow-credentials" not in response.headers
    assert preflight.status_code in (404, 405)  # no CORS handler answers it


def test_a_wrong_token_is_refused_without_echoing_it(client: TestClient) -> None:
    wrong = TOKENS["admin"] + "x"
    response = client.get("/v1/policies", headers={"Authorization": f"Bearer {wrong}"})

    assert response.status_code == 401
    assert wrong not in response.text
    assert TOKENS["admin"] not in response.text

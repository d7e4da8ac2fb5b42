"""What fuzzing found, kept as named cases: each was a 500 (or a 200 stream cut short) and
is now a 422 that names the parameter."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from tests.conftest import auth


@dataclass(frozen=True)
class Found:
    name: str
    url: str
    field: str


CASES = [
    Found("NUL in tickId", "/v1/decisions?tickId=a%00b", "query.tickId"),
    Found("NUL in tickId, export", "/v1/decisions/export?tickId=a%00b", "query.tickId"),
    Found("since before year 1 in UTC", "/v1/decisions?since=0001-01-01T00:00:00%2B23:59",
          "query.since"),
    Found("until after year 9999 in UTC", "/v1/decisions?until=9999-12-31T23:59:59-05:00",
          "query.until"),
    Found("until after year 9999 in UTC, export",
          "/v1/decisions/export?format=csv&until=9999-12-31T23:59:59-05:00", "query.until"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_odd_filters_are_a_422_naming_the_parameter(client: TestClient, case: Found) -> None:
    response = client.get(case.url, headers=auth("viewer"))

    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [case.field]


def test_times_at_the_ends_of_the_range_still_filter(client: TestClient) -> None:
    response = client.get(
        "/v1/decisions",
        params={"since": "0001-01-01T00:00:00-23:59", "until": "9999-12-31T23:59:59+05:00"},
        headers=auth("viewer"),
    )

    assert response.status_code == 200, response.text

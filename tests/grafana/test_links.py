"""Deep links from a decision to the dashboard: built, parsed back, and served by the API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from pdscaler import wiring
from pdscaler.config import Settings, load_settings
from pdscaler.control.clock import FakeClock
from pdscaler.domain.errors import InvalidInput
from pdscaler.domain.policy import Role
from pdscaler.grafana.links import DashboardLinks, DashboardView, parse_dashboard_url
from pdscaler.store.db import Database
from pdscaler.store.decisions import DecisionStore
from tests.conftest import auth
from tests.factories import decision, policy_doc

AT = datetime(2026, 3, 1, 12, 0, 7, 250_000, tzinfo=UTC)
VIEWER = auth("viewer")


@pytest.mark.parametrize(
    ("base_url", "window"),
    [
        ("https://grafana.example.org", timedelta(minutes=15)),
        ("https://example.org/grafana/", timedelta(minutes=15)),
        ("http://127.0.0.1:3000", timedelta(seconds=90)),
    ],
)
def test_link_round_trips(base_url: str, window: timedelta) -> None:
    links = DashboardLinks(base_url, "pdscaler", window)

    url = links.decision_url(decided_at=AT, namespace="inference", policy="llama-8b",
                             role="decode")  # fmt: skip

    assert url.startswith(base_url.rstrip("/") + "/d/pdscaler/pdscaler?")
    assert parse_dashboard_url(url) == DashboardView(
        dashboard_uid="pdscaler",
        time_from=AT - window,
        time_to=AT + window,
        namespace="inference",
        policy="llama-8b",
        role="decode",
    )


def test_time_range_is_whole_milliseconds() -> None:
    url = DashboardLinks("http://g", "uid-1").decision_url(
        decided_at=AT, namespace="n", policy="p", role="prefill"
    )

    assert f"from={int((AT - timedelta(minutes=15)).timestamp() * 1000)}" in url
    assert f"to={int((AT + timedelta(minutes=15)).timestamp() * 1000)}" in url


@pytest.mark.parametrize(
    "url",
    [
        "http://g/dashboards",
        "http://g/d/pdscaler/pdscaler?from=1&to=2&var-namespace=n&var-policy=p",
        "http://g/d/pdscaler/pdscaler?from=x&to=2&var-namespace=n&var-policy=p&var-role=r",
        "http://g/d/pdscaler/pdscaler?from=1&from=3&to=2&var-namespace=n&var-policy=p&var-role=r",
    ],
    ids=["no-dashboard", "no-role", "bad-time", "two-froms"],
)
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput):
        parse_dashboard_url(url)


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(InvalidInput):
        DashboardLinks("http://g", "a/b")
    with pytest.raises(InvalidInput):
        DashboardLinks("http://g", "pdscaler", timedelta(0))


def test_settings_carry_the_link_window() -> None:
    settings = load_settings({}, grafana={"url": "http://g:3000", "link_window": "5m"})

    assert settings.grafana.link_window == timedelta(minutes=5)
    assert load_settings({}).grafana.link_window == timedelta(minutes=15)


# --- the API ---------------------------------------------------------------------------


def _app(settings: Settings, db: Database, links: DashboardLinks | None) -> FastAPI:
    """The app as wiring builds it, with Grafana configured as ``links`` says."""
    if links is not None:
        grafana = settings.grafana.model_copy(update={
            "url": links.base_url, "dashboard_uid": links.dashboard_uid,
            "link_window": links.window,
        })  # fmt: skip
        settings = settings.model_copy(update={"grafana": grafana})
    return wiring.build_app(settings, db, FakeClock(AT))


@pytest.fixture
def seeded_id(db: Database, settings: Settings) -> int:
    with TestClient(_app(settings, db, None)) as client:
        client.post("/v1/policies", json=policy_doc(name="llama"), headers=auth("editor"))
    return DecisionStore(db).record(decision(AT, role=Role.DECODE, current=2, desired=4))


def test_decisions_carry_a_dashboard_link_when_grafana_is_configured(
    db: Database, settings: Settings, seeded_id: int
) -> None:
    links = DashboardLinks("https://grafana.example.org", "pdscaler", timedelta(minutes=10))
    expected = DashboardView("pdscaler", AT - timedelta(minutes=10), AT + timedelta(minutes=10),
                             "inference", "llama", "decode")  # fmt: skip

    with TestClient(_app(settings, db, links)) as client:
        one = client.get(f"/v1/decisions/{seeded_id}", headers=VIEWER).json()
        page = client.get("/v1/decisions", headers=VIEWER).json()
        export = client.get("/v1/decisions/export", headers=VIEWER).content.splitlines()

    documents: list[dict[str, Any]] = [one, *page["items"], *map(orjson.loads, export)]
    assert len(documents) == 3
    for document in documents:
        assert parse_dashboard_url(document["grafanaUrl"]) == expected


def test_without_grafana_the_link_is_null(db: Database, settings: Settings, seeded_id: int) -> None:
    with TestClient(_app(settings, db, None)) as client:
        one = client.get(f"/v1/decisions/{seeded_id}", headers=VIEWER).json()

    assert one["grafanaUrl"] is None


def test_configured_grafana_links_each_decision_and_explain(
    db: Database, settings: Settings, seeded_id: int
) -> None:
    grafana = settings.grafana.model_copy(
        update={"url": "https://grafana.example.org/g/", "link_window": timedelta(minutes=5)}
    )
    configured = settings.model_copy(update={"grafana": grafana})
    expected = DashboardView("pdscaler", AT - timedelta(minutes=5), AT + timedelta(minutes=5),
                             "inference", "llama", "decode")  # fmt: skip

    with TestClient(wiring.build_app(configured, db, FakeClock(AT))) as client:
        one = client.get(f"/v1/decisions/{seeded_id}", headers=VIEWER).json()
        explained = client.get("/v1/policies/inference/llama/explain", headers=VIEWER).json()

    assert parse_dashboard_url(one["grafanaUrl"]) == expected
    (pool,) = explained["pools"]
    assert parse_dashboard_url(pool["grafanaUrl"]) == expected

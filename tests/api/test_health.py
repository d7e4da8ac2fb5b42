"""Liveness and readiness."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from pdscaler.api.app import create_app
from pdscaler.config import Settings
from pdscaler.store import migrate
from pdscaler.store.db import Database, create_db_engine
from pdscaler.wiring import build_app, build_services


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {
        "status": "ready",
        "schemaRevision": migrate.head_revision(),
        "warnings": [],
    }


def test_readyz_is_503_when_the_schema_falls_behind(settings: Settings, tmp_path: Path) -> None:
    db = Database(create_db_engine(f"sqlite:///{tmp_path / 'x.db'}"))
    migrate.upgrade(db.engine)
    with TestClient(build_app(settings, db)) as client:
        migrate.downgrade(db.engine, "base")

        response = client.get("/readyz")

    assert response.status_code == 503
    assert "pdscaler db upgrade" in response.json()["message"]
    assert client.get("/healthz").status_code == 200


def test_readyz_is_503_when_the_database_is_gone(settings: Settings) -> None:
    db = Database(create_db_engine("postgresql+psycopg://nobody@127.0.0.1:1/none"))
    with TestClient(create_app(build_services(settings, db), max_body_bytes=1024)) as client:
        response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["code"] == "Unavailable"


def test_data_routes_are_503_when_the_schema_is_gone(settings: Settings, tmp_path: Path) -> None:
    db = Database(create_db_engine(f"sqlite:///{tmp_path / 'y.db'}"))
    migrate.upgrade(db.engine)
    with TestClient(build_app(settings, db), raise_server_exceptions=False) as client:
        migrate.downgrade(db.engine, "base")

        response = client.get("/v1/policies", headers={"Authorization": "Bearer tok-viewer"})

    assert response.status_code == 503
    assert "pdscaler db upgrade" in response.json()["message"]

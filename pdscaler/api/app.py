"""The FastAPI application, assembled from routers; no side effects until served."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from pdscaler import __version__
from pdscaler.api import decisions, errors, explain, forecasts, health, policies
from pdscaler.api.body import BodyLimit
from pdscaler.api.context import Services
from pdscaler.domain.policy import Policy


def create_app(services: Services, *, max_body_bytes: int) -> FastAPI:
    app = FastAPI(
        title="pdscaler",
        version=__version__,
        description="Coordinated prefill/decode autoscaling: policies and the decision log.",
    )
    app.state.services = services
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.include_router(health.router)
    app.include_router(policies.router)
    app.include_router(forecasts.router)
    app.include_router(explain.router)
    app.include_router(decisions.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus the Policy schema that policy bodies refer to."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        policy = Policy.model_json_schema(
            by_alias=True, ref_template="#/components/schemas/{model}"
        )
        for name, schema in policy.pop("$defs", {}).items():
            schemas.setdefault(name, schema)
        schemas["Policy"] = policy
        app.openapi_schema = document
    return app.openapi_schema

"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from pdscaler.api.context import Svc
from pdscaler.api.schemas import ErrorOut, Health, Readiness
from pdscaler.domain.errors import Unavailable

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up and serving."""
    return Health(status="ok")


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}},
                             "description": "Prometheus text format"}})  # fmt: skip
def metrics(svc: Svc) -> Response:
    """pdscaler's own metrics, in Prometheus's text format (see docs/metrics.md)."""
    return Response(svc.telemetry.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/readyz", response_model=Readiness, responses={503: {"model": ErrorOut}})
def readyz(svc: Svc) -> Readiness:
    """The database answers, its schema is at this build's migration head, and the control
    loop (where this process runs one) has ticked within the last three intervals."""
    revision = svc.check_schema()
    problem = svc.loop_problem()
    if problem is not None:
        raise Unavailable(f"control loop: {problem}")
    return Readiness(status="ready", schema_revision=revision, warnings=svc.readiness_warnings())

"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter

from pdscaler.api.context import Svc
from pdscaler.api.schemas import ErrorOut, Health, Readiness
from pdscaler.domain.errors import Unavailable

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up and serving."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": ErrorOut}})
def readyz(svc: Svc) -> Readiness:
    """The database answers, its schema is at this build's migration head, and the control
    loop (where this process runs one) has ticked within the last three intervals."""
    revision = svc.check_schema()
    problem = svc.loop_problem()
    if problem is not None:
        raise Unavailable(f"control loop: {problem}")
    return Readiness(status="ready", schema_revision=revision, warnings=svc.readiness_warnings())

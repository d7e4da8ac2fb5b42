"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter

from pdscaler.api.context import Svc
from pdscaler.api.schemas import ErrorOut, Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up and serving."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": ErrorOut}})
def readyz(svc: Svc) -> Readiness:
    """The database answers and its schema is at this build's migration head."""
    return Readiness(status="ready", schema_revision=svc.check_schema())

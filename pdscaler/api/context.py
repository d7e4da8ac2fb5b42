"""What the routes need, built once in wiring and reached through ``app.state``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pdscaler.api.auth import Principal, TokenRegistry
from pdscaler.api.cursor import CursorCodec
from pdscaler.config import Role
from pdscaler.domain.clock import Clock
from pdscaler.domain.errors import FieldError
from pdscaler.domain.policy import Policy
from pdscaler.grafana.links import DashboardLinks
from pdscaler.store.db import Database
from pdscaler.store.decisions import DecisionStore
from pdscaler.store.forecasts import ForecastModelStore
from pdscaler.store.policies import PolicyStore
from pdscaler.telemetry import Telemetry


@dataclass(frozen=True)
class Services:
    db: Database
    policies: PolicyStore
    decisions: DecisionStore
    forecast_models: ForecastModelStore
    telemetry: Telemetry  # pdscaler's own metrics, served at /metrics
    tokens: TokenRegistry
    cursors: CursorCodec
    clock: Clock
    check_schema: Callable[[], str]  # returns the schema revision, raises if not at head
    loop_problem: Callable[[], str | None] = lambda: None  # why the control loop is unhealthy
    # What a policy's status reports without failing (its metric families not found).
    policy_warnings: Callable[[Policy], list[str]] = lambda _policy: []
    # What readiness reports without failing (metric families that cannot be found).
    readiness_warnings: Callable[[], list[str]] = lambda: []
    # Checks of a valid policy against the outside world (a custom engine's PromQL).
    check_policy: Callable[[Policy], list[FieldError]] = lambda _policy: []
    # Links from a decision to the Grafana dashboard around it (None: not configured).
    dashboard_links: DashboardLinks | None = None


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


# Declares the bearer scheme in OpenAPI; the header itself is checked by TokenRegistry so
# that a malformed header is a 401, not an anonymous request.
_bearer = HTTPBearer(auto_error=False)


def _requires(role: Role) -> Callable[..., Principal]:
    def dependency(
        request: Request,
        _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        authorization = request.headers.get("authorization")
        return services(request).tokens.authorize(authorization, role)

    return dependency


Svc = Annotated[Services, Depends(services)]
Viewer = Annotated[Principal, Depends(_requires(Role.VIEWER))]
Editor = Annotated[Principal, Depends(_requires(Role.EDITOR))]
Admin = Annotated[Principal, Depends(_requires(Role.ADMIN))]

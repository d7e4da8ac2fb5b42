"""Why a policy's pools have the size they have: the last decision of each, explained."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from pdscaler.api.context import Svc, Viewer
from pdscaler.api.schemas import ErrorOut, ExplainOut, PoolExplainOut, StepOut
from pdscaler.domain.explain import explain
from pdscaler.domain.policy import DNS_LABEL, Role
from pdscaler.store.decisions import DecisionFilter

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 403, 404, 422, 503)
}
router = APIRouter(prefix="/v1/policies", tags=["policies"], responses=ERRORS)

Label = Annotated[str, Path(pattern=DNS_LABEL, max_length=63)]


@router.get("/{namespace}/{name}/explain", response_model=ExplainOut)
def explain_policy(namespace: Label, name: Label, svc: Svc, _: Viewer) -> ExplainOut:
    """The last decision for each pool: signals, the raw recommendation, each clamp, final."""
    stored = svc.policies.get(namespace, name)
    links = svc.dashboard_links
    pools = []
    for role in Role:
        page, _next = svc.decisions.page(
            DecisionFilter(namespace=namespace, policy=name, role=role), limit=1
        )
        if not page:
            continue
        decision = page[0]
        pools.append(
            PoolExplainOut(
                role=role,
                decision_id=decision.id,
                decided_at=decision.record.decided_at,
                status=decision.record.status,
                current_replicas=decision.record.current_replicas,
                desired_replicas=decision.record.desired_replicas,
                steps=[
                    StepOut(name=s.name, value=s.value, reason=s.reason, message=s.message)
                    for s in decision.record.steps
                ],
                text="\n".join(explain(decision.record, decision.id)),
                grafana_url=None
                if links is None
                else links.decision_url(
                    decided_at=decision.record.decided_at,
                    namespace=namespace,
                    policy=name,
                    role=role.value,
                ),
            )
        )
    return ExplainOut(namespace=namespace, name=name, version=stored.version, pools=pools)

"""Decision log routes: filtered, cursor-paginated reads and streaming export."""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response, StreamingResponse

from pdscaler.api.context import Svc, Viewer
from pdscaler.api.schemas import NO_NUL, DecisionOut, DecisionPage, ErrorOut
from pdscaler.domain.decision import Action, DecisionStatus
from pdscaler.domain.errors import FieldError, InvalidInput
from pdscaler.domain.policy import DNS_LABEL, Role
from pdscaler.grafana.links import DashboardLinks
from pdscaler.store.decisions import DecisionFilter, DecisionText

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 422, 503)
}
router = APIRouter(prefix="/v1/decisions", tags=["decisions"], responses=ERRORS)


def decision_filter(
    namespace: Annotated[str | None, Query(pattern=DNS_LABEL, max_length=63)] = None,
    policy: Annotated[str | None, Query(pattern=DNS_LABEL, max_length=63)] = None,
    role: Role | None = None,
    action: Action | None = None,
    status: DecisionStatus | None = None,
    since: Annotated[datetime | None, Query(description="Inclusive; ISO 8601.")] = None,
    until: Annotated[datetime | None, Query(description="Exclusive; ISO 8601.")] = None,
    tick_id: Annotated[
        str | None,
        Query(
            alias="tickId",
            max_length=36,
            pattern=NO_NUL,
            description="One tick of one policy (a log line's "
            "tick_id): its prefill and decode decisions.",
        ),
    ] = None,
) -> DecisionFilter:
    since, until = _utc("query.since", since), _utc("query.until", until)
    if since is not None and until is not None and since >= until:
        raise InvalidInput(
            "since must be before until",
            errors=(FieldError("query.since", "must be before until"),),
        )
    return DecisionFilter(namespace, policy, role, action, status, since, until, tick_id)


Filter = Annotated[DecisionFilter, Depends(decision_filter)]


@router.get("", response_model=DecisionPage)
def list_decisions(
    svc: Svc,
    _: Viewer,
    where: Filter,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """Decisions, newest first. Pass ``nextCursor`` back as ``cursor`` for the next page."""
    after = svc.cursors.decode(cursor) if cursor is not None else None
    page, next_position = svc.decisions.page_text(where, limit=limit, after=after)
    body = {
        "items": [document(d, svc.dashboard_links) for d in page],
        "nextCursor": svc.cursors.encode(next_position) if next_position else None,
    }
    return Response(orjson.dumps(body, option=JSON_OPTIONS), media_type="application/json")


class ExportFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}},
)
def export_decisions(
    svc: Svc, _: Viewer, where: Filter, format: ExportFormat = ExportFormat.JSONL
) -> StreamingResponse:
    """Every matching decision, newest first, as CSV or JSON lines."""
    scan = svc.decisions.scan_text(where)
    # The first batch is read before the 200 goes out, so that a query that fails is an
    # error response and not a stream cut short.
    rows = itertools.chain(list(itertools.islice(scan, 1)), scan)
    if format is ExportFormat.CSV:
        return StreamingResponse(_csv_lines(rows), media_type="text/csv")
    return StreamingResponse(
        _json_lines(rows, svc.dashboard_links), media_type="application/x-ndjson"
    )


@router.get("/{decision_id}", response_model=DecisionOut)
def get_decision(
    decision_id: Annotated[int, Path(ge=1, le=2**63 - 1)], svc: Svc, _: Viewer
) -> Response:
    decision = svc.decisions.get_text(decision_id)
    body = orjson.dumps(document(decision, svc.dashboard_links), option=JSON_OPTIONS)
    return Response(body, media_type="application/json")


JSON_OPTIONS = orjson.OPT_UTC_Z


def document(d: DecisionText, links: DashboardLinks | None = None) -> dict[str, Any]:
    """A decision as the API serves it (the ``DecisionOut`` schema).

    Built by hand rather than through the schema, and with the stored JSON of steps,
    signals and forecast passed through as is: the list route serves pages at the rate
    Grafana and operators page through a million rows. ``grafanaUrl`` is null unless
    Grafana is configured.
    """
    return {
        "id": d.id,
        "tickId": d.tick_id,
        "decidedAt": d.decided_at,
        "updatedAt": d.updated_at,
        "policyNamespace": d.policy_namespace,
        "policyName": d.policy_name,
        "policyVersion": d.policy_version,
        "role": d.role,
        "target": {
            "apiVersion": d.target_api_version,
            "kind": d.target_kind,
            "name": d.target_name,
        },
        "mode": d.mode,
        "action": d.action,
        "status": d.status,
        "currentReplicas": d.current_replicas,
        "readyReplicas": d.ready_replicas,
        "pendingReplicas": d.pending_replicas,
        "rawRecommendation": d.raw_recommendation,
        "desiredReplicas": d.desired_replicas,
        "steps": orjson.Fragment(d.steps_json),
        "signals": orjson.Fragment(d.signals_json),
        "forecast": None if d.forecast_json is None else orjson.Fragment(d.forecast_json),
        "error": d.error,
        "resourceVersionRead": d.resource_version_read,
        "resourceVersionWritten": d.resource_version_written,
        "leaderIdentity": d.leader_identity,
        "grafanaUrl": None if links is None else grafana_url(d, links),
    }


def grafana_url(d: DecisionText, links: DashboardLinks) -> str:
    """The dashboard around the decision, with its namespace, policy and role selected."""
    return links.decision_url(
        decided_at=d.decided_at, namespace=d.policy_namespace, policy=d.policy_name, role=d.role
    )


CSV_COLUMNS = (
    "id",
    "decidedAt",
    "policyNamespace",
    "policyName",
    "policyVersion",
    "role",
    "targetKind",
    "targetName",
    "mode",
    "action",
    "status",
    "currentReplicas",
    "readyReplicas",
    "pendingReplicas",
    "rawRecommendation",
    "desiredReplicas",
    "steps",
    "error",
)


def _csv_lines(rows: Iterator[DecisionText]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for d in rows:
        steps = " > ".join(
            f"{s['name']}={s['value']}({s['reason']})" for s in json.loads(d.steps_json)
        )
        writer.writerow(
            (
                d.id,
                d.decided_at.isoformat(),
                d.policy_namespace,
                d.policy_name,
                d.policy_version,
                d.role,
                d.target_kind,
                d.target_name,
                d.mode,
                d.action,
                d.status,
                d.current_replicas,
                d.ready_replicas,
                d.pending_replicas,
                d.raw_recommendation,
                d.desired_replicas,
                steps,
                d.error or "",
            )
        )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def _json_lines(rows: Iterator[DecisionText], links: DashboardLinks | None) -> Iterator[bytes]:
    for d in rows:
        yield orjson.dumps(document(d, links), option=JSON_OPTIONS | orjson.OPT_APPEND_NEWLINE)


def _utc(field: str, at: datetime | None) -> datetime | None:
    """The time in UTC; a time that is out of range once moved to UTC is a 422, not a 500."""
    if at is None:
        return None
    try:
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(
            f"{field}: out of range in UTC", errors=(FieldError(field, "out of range in UTC"),)
        ) from None

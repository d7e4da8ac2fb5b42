"""Every SQL query of the dashboard, expanded as Grafana expands it, on the real Postgres."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pdscaler import wiring
from pdscaler.config import Settings
from pdscaler.control.clock import FakeClock
from pdscaler.grafana.sql import POSTGRES_TYPE
from tests.conftest import auth
from tests.grafana.conftest import NAMESPACE, T0, TICK, Seeded
from tests.grafana.expand import Variable, expand_sql

pytestmark = pytest.mark.postgres

WHOLE_RANGE = (T0 - timedelta(minutes=5), T0 + timedelta(minutes=5))
TABLE_COLUMNS = {
    "id", "decided_at", "namespace", "policy", "version", "role", "mode", "action", "status",
    "current", "desired", "reason", "chain", "error", "decision_path", "version_path",
}  # fmt: skip


Rows = tuple[list[str], list[dict[str, Any]]]


def run(seeded: Seeded, sql: str) -> Rows:
    with seeded.db.engine.connect() as connection:
        result = connection.exec_driver_sql(sql)
        columns = list(result.keys())
        return columns, [dict(zip(columns, row, strict=True)) for row in result]


def resolve(
    seeded: Seeded,
    dashboard: Mapping[str, Any],
    selected: Mapping[str, list[str]],
    time_range: tuple[datetime, datetime] = WHOLE_RANGE,
) -> dict[str, Variable]:
    """The dashboard's variables in order, each query variable's options from Postgres."""
    variables: dict[str, Variable] = {}
    for v in dashboard["templating"]["list"]:
        name, kind = v["name"], v["type"]
        if kind == "query":
            assert v["datasource"]["type"] == POSTGRES_TYPE
            _, rows = run(seeded, expand_sql(v["query"], variables, *time_range))
            options = [str(next(iter(row.values()))) for row in rows]
        elif kind == "custom":
            options = [o.strip() for o in v["query"].split(",")]
        else:
            continue
        variables[name] = Variable(
            name, selected.get(name, ["$__all"]), options, v["multi"], v["includeAll"]
        )
    return variables


def annotation_sql(dashboard: Mapping[str, Any]) -> str:
    (annotation,) = [a for a in dashboard["annotations"]["list"] if "target" in a]
    assert annotation["datasource"]["type"] == POSTGRES_TYPE
    sql: str = annotation["target"]["rawSql"]
    return sql


def table_sql(dashboard: Mapping[str, Any]) -> str:
    (panel,) = [p for p in dashboard["panels"] if p["type"] == "table"]
    (target,) = panel["targets"]
    assert panel["datasource"]["type"] == POSTGRES_TYPE
    assert target["format"] == "table"
    assert target["rawQuery"] is True
    sql: str = target["rawSql"]
    return sql


def every_sql(dashboard: Mapping[str, Any]) -> list[str]:
    found = [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    found.append(annotation_sql(dashboard))
    for panel in dashboard["panels"]:
        found += [t["rawSql"] for t in panel.get("targets", []) if "rawSql" in t]
    return found


def test_every_sql_query_runs_and_finds_rows(seeded: Seeded, dashboard: dict[str, Any]) -> None:
    variables = resolve(seeded, dashboard, {})
    queries = every_sql(dashboard)

    assert len(queries) == 4  # two variables, the annotations, the decision log
    for sql in queries:
        _, rows = run(seeded, expand_sql(sql, variables, *WHOLE_RANGE))
        assert rows, sql


def test_variables_list_namespaces_and_the_policies_of_those_selected(
    seeded: Seeded, dashboard: dict[str, Any]
) -> None:
    every = resolve(seeded, dashboard, {})
    one = resolve(seeded, dashboard, {"namespace": [NAMESPACE]})

    assert every["namespace"].options == ["batch", "inference"]
    assert every["policy"].options == ["llama", "qwen"]
    assert one["policy"].options == ["llama"]
    assert every["role"].options == ["prefill", "decode"]


def test_annotations_are_the_scale_changes_with_their_reason(
    seeded: Seeded, dashboard: dict[str, Any]
) -> None:
    sql = expand_sql(annotation_sql(dashboard), resolve(seeded, dashboard, {}), *WHOLE_RANGE)

    columns, rows = run(seeded, sql)

    assert columns == ["time", "text", "tags"]
    assert sorted((r["time"], r["tags"]) for r in rows) == [
        (T0 + TICK, "scale_down,decode,applied"),
        (T0 + TICK, "scale_up,prefill,pending"),
        (T0 + 2 * TICK, "scale_up,prefill,pending"),
    ]
    assert rows[-1]["text"] == (
        "llama prefill: 3 -> 4 (ScaleUpLimit, pending): at most 1 pod per 15s"
    )


@pytest.mark.parametrize(
    ("selected", "time_range", "expected"),
    [
        pytest.param({}, WHOLE_RANGE, 3, id="all"),
        pytest.param({"namespace": [NAMESPACE]}, WHOLE_RANGE, 2, id="one-namespace"),
        pytest.param({"policy": ["qwen"]}, WHOLE_RANGE, 1, id="one-policy"),
        pytest.param({"role": ["decode"]}, WHOLE_RANGE, 1, id="one-role"),
        pytest.param({"role": ["prefill", "decode"]}, WHOLE_RANGE, 3, id="both-roles"),
        pytest.param({}, (T0 + 2 * TICK, T0 + 3 * TICK), 1, id="time-range"),
        pytest.param({}, (T0 - 2 * TICK, T0 - TICK), 0, id="before-any"),
    ],
)
def test_annotations_follow_variables_and_time_range(
    seeded: Seeded,
    dashboard: dict[str, Any],
    selected: dict[str, list[str]],
    time_range: tuple[datetime, datetime],
    expected: int,
) -> None:
    variables = resolve(seeded, dashboard, selected, time_range)

    _, rows = run(seeded, expand_sql(annotation_sql(dashboard), variables, *time_range))

    assert len(rows) == expected


def test_decision_log_has_the_columns_and_links_the_table_shows(
    seeded: Seeded, dashboard: dict[str, Any]
) -> None:
    variables = resolve(seeded, dashboard, {"policy": ["llama"], "role": ["prefill"]})

    columns, rows = run(seeded, expand_sql(table_sql(dashboard), variables, *WHOLE_RANGE))

    assert set(columns) == TABLE_COLUMNS
    assert [r["id"] for r in rows] == [seeded.ids[f"llama-prefill-{t}"] for t in (2, 1, 0)]
    newest = rows[0]
    assert (newest["namespace"], newest["policy"], newest["role"]) == (NAMESPACE, "llama",
                                                                       "prefill")  # fmt: skip
    assert (newest["action"], newest["status"], newest["current"], newest["desired"]) == (
        "scale_up", "pending", 3, 4,
    )  # fmt: skip
    assert newest["reason"] == "ScaleUpLimit"
    assert newest["chain"] == "recommend 5 > limit 4"
    assert newest["decided_at"] == T0 + 2 * TICK
    assert newest["decision_path"] == f"/v1/decisions/{newest['id']}"
    assert newest["version_path"] == f"/v1/policies/{NAMESPACE}/llama/versions/1"


def test_decision_log_filters_by_action(seeded: Seeded, dashboard: dict[str, Any]) -> None:
    variables = resolve(seeded, dashboard, {"action": ["none"]})

    _, rows = run(seeded, expand_sql(table_sql(dashboard), variables, *WHOLE_RANGE))

    assert {r["action"] for r in rows} == {"none"}
    assert len(rows) == 4  # three decode decisions and the first prefill one


def test_table_links_open_the_decision_and_the_policy_version_in_the_api(
    seeded: Seeded, dashboard: dict[str, Any], settings: Settings, tmp_path: Path
) -> None:
    variables = resolve(seeded, dashboard, {"policy": ["qwen"]})
    _, (row,) = run(seeded, expand_sql(table_sql(dashboard), variables, *WHOLE_RANGE))
    (panel,) = [p for p in dashboard["panels"] if p["type"] == "table"]
    links = {
        o["matcher"]["options"]: o["properties"][0]["value"][0]["url"]
        for o in panel["fieldConfig"]["overrides"]
        if o["properties"][0]["id"] == "links"
    }
    app = wiring.build_app(settings, seeded.db, FakeClock(T0))

    with TestClient(app) as client:
        for column, url in links.items():
            assert url == "${api}${__value.raw}"
            response = client.get(row[column], headers=auth("viewer"))
            assert response.status_code == 200, (column, response.text)
            if column == "decision_path":
                assert response.json()["id"] == seeded.ids["qwen-decode"]
            else:
                assert response.json()["version"] == 2

    assert set(links) == {"decision_path", "version_path"}

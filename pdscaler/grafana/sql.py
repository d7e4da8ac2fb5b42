"""Grafana's PostgreSQL data source, in the terms of grafana-foundation-sdk.

The SDK has no builder for it, so this module adds the two things the dashboard needs: a
raw-SQL panel query and a raw-SQL annotation target. Both serialise to what Grafana 11's
editor saves in code mode (``editorMode: code``, ``rawQuery: true``, ``rawSql``).
"""

from __future__ import annotations

from enum import StrEnum

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard

POSTGRES_TYPE = "grafana-postgresql-datasource"


class SqlFormat(StrEnum):
    TABLE = "table"
    TIME_SERIES = "time_series"


class SqlQuery(cogvariants.Dataquery):
    """One raw-SQL query of a panel."""

    def __init__(
        self, ref_id: str, raw_sql: str, datasource: dashboard.DataSourceRef, fmt: SqlFormat
    ) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.datasource = datasource
        self.format = fmt

    def to_json(self) -> dict[str, object]:
        return {
            "datasource": self.datasource,
            "editorMode": "code",
            "format": self.format.value,
            "rawQuery": True,
            "rawSql": self.raw_sql,
            "refId": self.ref_id,
        }


class Sql(cogbuilder.Builder[cogvariants.Dataquery]):
    """Builds a :class:`SqlQuery`; the panel gives it to ``with_target``."""

    def __init__(
        self,
        raw_sql: str,
        datasource: dashboard.DataSourceRef,
        *,
        ref_id: str = "A",
        fmt: SqlFormat = SqlFormat.TABLE,
    ) -> None:
        self._query = SqlQuery(ref_id, raw_sql, datasource, fmt)

    def build(self) -> SqlQuery:
        return self._query


class SqlAnnotationTarget(dashboard.AnnotationTarget):
    """An annotation query in SQL: rows with ``time``, ``text`` and ``tags`` columns."""

    def __init__(self, raw_sql: str, ref_id: str = "Anno") -> None:
        super().__init__()
        self.raw_sql = raw_sql
        self.ref_id = ref_id

    def to_json(self) -> dict[str, object]:
        return {
            "editorMode": "code",
            "format": SqlFormat.TABLE.value,
            "rawQuery": True,
            "rawSql": self.raw_sql,
            "refId": self.ref_id,
        }


class SqlAnnotation(cogbuilder.Builder[dashboard.AnnotationTarget]):
    def __init__(self, raw_sql: str) -> None:
        self._target = SqlAnnotationTarget(raw_sql)

    def build(self) -> SqlAnnotationTarget:
        return self._target

"""What Grafana does to a query before its data source sees it, for the dashboard tests.

Two passes, as in Grafana:

1. The front end replaces template variables (``$name``, ``${name}``, ``[[name]]``), each
   data source formatting the values its own way: the PostgreSQL data source quotes them
   as SQL literals when the variable is multi-value or has "All" (``'a','b'``) and only
   doubles quotes otherwise; the Prometheus data source regex-escapes them and joins
   several as ``(a|b)``. "All" without a custom all value means every option.
   Variables it does not know (``$__timeFilter``) are left as they are.
2. The PostgreSQL back end expands its macros: ``$__timeFilter(col)`` to
   ``col BETWEEN '<from>' AND '<to>'``, ``$__timeFrom()`` and ``$__timeTo()`` to the quoted
   bounds, ``$__time(col)`` to ``col AS "time"``, the times in Go's RFC 3339 with
   nanoseconds. Prometheus gets ``$__interval`` and ``$__rate_interval``, the latter
   ``max($__interval + scrape interval, 4 x scrape interval)``.

Anything else that looks like a macro fails the test: the dashboard should not use what
this module cannot check.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# Grafana's variable syntax: $var, [[var]] or [[var:fmt]], ${var}, ${var.field} or ${var:fmt}.
_VARIABLE = re.compile(
    r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}"
)
# The SQL data sources' macros: $__name(arguments).
_MACRO = re.compile(r"\$(__\w+)\(([^\)]*)\)")
_PROM_SPECIAL = re.compile(r"[$^*{}\[\]'+?.()|]")


@dataclass(frozen=True)
class Variable:
    """A template variable as the dashboard defines it, with the values selected."""

    name: str
    selected: Sequence[str]  # ["$__all"] for All
    options: Sequence[str] = ()
    multi: bool = True
    include_all: bool = True

    @property
    def values(self) -> list[str]:
        return list(self.options) if list(self.selected) == ["$__all"] else list(self.selected)


def _replace_variables(text: str, variables: Mapping[str, Variable], fmt: object) -> str:
    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        variable = variables.get(name)
        if variable is None:
            return match.group(0)
        if match.group(3) or match.group(6) or match.group(5):
            raise ValueError(f"variable formats and fields are not expanded here: {match[0]}")
        return fmt(variable)  # type: ignore[operator, no-any-return]

    return _VARIABLE.sub(substitute, text)


# --- PostgreSQL ----------------------------------------------------------------------------


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_format(variable: Variable) -> str:
    values = variable.values
    if variable.multi or variable.include_all:
        return ",".join(_sql_literal(v) for v in values)
    (value,) = values
    return value.replace("'", "''")


def go_rfc3339_nano(at: datetime) -> str:
    """Go's ``t.UTC().Format(time.RFC3339Nano)``: trailing zeros of the fraction dropped."""
    at = at.astimezone(UTC)
    text = at.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{at.microsecond:06d}000".rstrip("0")
    return text + (f".{fraction}" if fraction else "") + "Z"


def _sql_macros(sql: str, time_from: datetime, time_to: datetime) -> str:
    start, end = go_rfc3339_nano(time_from), go_rfc3339_nano(time_to)

    def expand(match: re.Match[str]) -> str:
        name, raw = match.group(1), match.group(2)
        args = [a.strip() for a in raw.split(",")] if raw.strip() else []
        if name == "__timeFilter" and len(args) == 1:
            return f"{args[0]} BETWEEN '{start}' AND '{end}'"
        if name == "__timeFrom" and not args:
            return f"'{start}'"
        if name == "__timeTo" and not args:
            return f"'{end}'"
        if name == "__time" and len(args) == 1:
            return f'{args[0]} AS "time"'
        raise ValueError(f"macro not expanded by this test helper: {match.group(0)}")

    expanded = _MACRO.sub(expand, sql)
    if "$__" in expanded:
        raise ValueError(f"unexpanded Grafana macro left in: {expanded}")
    return expanded


def expand_sql(
    sql: str, variables: Mapping[str, Variable], time_from: datetime, time_to: datetime
) -> str:
    """The SQL that Grafana's PostgreSQL data source sends to the server."""
    return _sql_macros(_replace_variables(sql, variables, _sql_format), time_from, time_to)


# --- Prometheus -------------------------------------------------------------------------


def _prom_regular_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\\\'")


def _prom_regex_escape(value: str) -> str:
    return _PROM_SPECIAL.sub(lambda m: "\\\\" + m.group(0), value.replace("\\", "\\\\\\\\"))


def _prom_format(variable: Variable) -> str:
    values = variable.values
    if not variable.multi and not variable.include_all:
        (value,) = values
        return _prom_regular_escape(value)
    escaped = [_prom_regex_escape(v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def _duration(interval: timedelta) -> str:
    return f"{int(interval.total_seconds() * 1000)}ms"


def rate_interval(interval: timedelta, scrape_interval: timedelta) -> timedelta:
    """Grafana's ``$__rate_interval``."""
    return max(interval + scrape_interval, 4 * scrape_interval)


def expand_promql(
    expr: str,
    variables: Mapping[str, Variable],
    *,
    interval: timedelta,
    scrape_interval: timedelta,
) -> str:
    """The PromQL that Grafana's Prometheus data source sends."""
    builtins = {
        "__rate_interval": _duration(rate_interval(interval, scrape_interval)),
        "__interval": _duration(interval),
    }

    def fmt(variable: Variable) -> str:
        return builtins[variable.name] if variable.name in builtins else _prom_format(variable)

    known = {**variables, **{name: Variable(name, ()) for name in builtins}}
    expanded = _replace_variables(expr, known, fmt)
    if "$" in expanded:
        raise ValueError(f"unexpanded variable left in: {expanded}")
    return expanded

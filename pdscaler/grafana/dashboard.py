"""pdscaler's Grafana dashboard, as code.

``python -m pdscaler.grafana.dashboard`` (``make dashboard``) writes it to
``deploy/grafana/dashboards/pdscaler.json``; a test fails when that file differs from what
:func:`render` makes. Built with grafana-foundation-sdk for Grafana 11's dashboard schema.
The panels read two data sources, picked by the ``prometheus`` and ``postgres`` variables:
Prometheus for engine, GPU and pdscaler metrics, and pdscaler's own database (Postgres)
for the decision log.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as board
from grafana_foundation_sdk.builders import prometheus, table, timeseries
from grafana_foundation_sdk.builders.common import VizLegendOptions
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from pdscaler.grafana import queries as q
from pdscaler.grafana.links import DASHBOARD_SLUG
from pdscaler.grafana.sql import POSTGRES_TYPE, Sql, SqlAnnotation

DASHBOARD_UID = "pdscaler"
OUTPUT = Path("deploy/grafana/dashboards/pdscaler.json")
# The UIDs the provisioning files in deploy/grafana give the two data sources.
PROMETHEUS_UID = "pdscaler-prometheus"
POSTGRES_UID = "pdscaler-postgres"

PROMETHEUS = model.DataSourceRef(type_val="prometheus", uid="${prometheus}")
POSTGRES = model.DataSourceRef(type_val=POSTGRES_TYPE, uid="${postgres}")

# Where `kubectl port-forward svc/pdscaler 8080` puts the API; set yours in the dashboard.
DEFAULT_API_URL = "http://127.0.0.1:8080"

# Panel ids are fixed: the decision annotations name the replicas panel by its id.
REPLICAS_PANEL_ID = 3


def build() -> board.Dashboard:
    dash = (
        board.Dashboard("pdscaler")
        .uid(DASHBOARD_UID)
        .description(
            "Prefill/decode autoscaling: load, pool sizes with scaling decisions, SLO "
            "signals, KV cache and queues, GPUs, and pdscaler's decision log."
        )
        .tags(["pdscaler", "llm", "autoscaling"])
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .time("now-3h", "now")
        .refresh("30s")
        .timezone("browser")
        .variables(_variables())
        .annotation(_decision_annotations())
        .link(
            board.DashboardLink("pdscaler API")
            .type(model.DashboardLinkType.LINK)
            .url("${api}/docs")
            .target_blank(True)
            .icon("external link")
        )
    )
    # Expanded rows: each row is followed by its panels at the top level of the dashboard.
    for row_id, (title, panels) in enumerate(_sections(), start=100):
        dash = dash.with_row(board.Row(title).id(row_id).collapsed(False))
        for panel in panels:
            dash = dash.with_panel(panel)
    return dash


def render() -> str:
    """The dashboard as the JSON checked in: sorted keys, two-space indent, final newline."""
    return json.dumps(build().build(), cls=JSONEncoder, sort_keys=True, indent=2) + "\n"


def _variables() -> list[cogbuilder.Builder[model.VariableModel]]:
    return [
        _datasource("prometheus", "Prometheus", "prometheus", PROMETHEUS_UID),
        _datasource("postgres", "Decision log", POSTGRES_TYPE, POSTGRES_UID),
        _sql_variable("namespace", "Namespace", q.NAMESPACES_SQL),
        _sql_variable("policy", "Policy", q.POLICIES_SQL),
        _custom("role", "Role", ["prefill", "decode"]),
        _custom("action", "Action", ["scale_up", "scale_down", "none"]),
        board.TextBoxVariable("api")
        .label("pdscaler API")
        .description("Base URL of pdscaler's API as your browser reaches it (decision links).")
        .default_value(DEFAULT_API_URL)
        .current(model.VariableOption(selected=True, text=DEFAULT_API_URL, value=DEFAULT_API_URL)),
    ]


def _datasource(name: str, label: str, kind: str, uid: str) -> board.DatasourceVariable:
    return (
        board.DatasourceVariable(name)
        .label(label)
        .type(kind)
        .current(model.VariableOption(selected=True, text=uid, value=uid))
    )


def _sql_variable(name: str, label: str, sql: str) -> board.QueryVariable:
    return (
        board.QueryVariable(name)
        .label(label)
        .datasource(POSTGRES)
        .query(sql)
        .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .current(model.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def _custom(name: str, label: str, values: list[str]) -> board.CustomVariable:
    return (
        board.CustomVariable(name)
        .label(label)
        .values(",".join(values))
        .multi(True)
        .include_all(True)
        .current(model.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def _decision_annotations() -> board.AnnotationQuery:
    return (
        board.AnnotationQuery()
        .name("Scaling decisions")
        .datasource(POSTGRES)
        .enable(True)
        .icon_color("orange")
        .target(SqlAnnotation(q.DECISION_ANNOTATIONS_SQL))
        .filter(board.AnnotationPanelFilter().exclude(False).ids([REPLICAS_PANEL_ID]))
    )


def _prom(expr: str, legend: str, ref_id: str) -> prometheus.Dataquery:
    return (
        prometheus.Dataquery()
        .expr(expr)
        .legend_format(legend)
        .ref_id(ref_id)
        .range()
        .format(PromQueryFormat.TIME_SERIES)
        .datasource(PROMETHEUS)
    )


def _graph(
    panel_id: int, title: str, description: str, unit: str, *targets: tuple[str, str]
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .id(panel_id)
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .unit(unit)
        .height(8)
        .span(12)
        .line_width(1)
        .fill_opacity(5)
        .legend(
            VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .calcs(["lastNotNull", "max"])
        )
    )
    for i, (expr, legend) in enumerate(targets):
        panel = panel.with_target(_prom(expr, legend, chr(ord("A") + i)))
    return panel


def _dashed(panel: timeseries.Panel, name_regexp: str) -> timeseries.Panel:
    """Draw the series whose name matches as a dashed red line: an SLO, a limit."""
    return panel.override_by_regexp(
        name_regexp,
        [
            model.DynamicConfigValue("custom.lineStyle", {"fill": "dash", "dash": [10, 10]}),
            model.DynamicConfigValue("color", {"mode": "fixed", "fixedColor": "red"}),
            model.DynamicConfigValue("custom.fillOpacity", 0),
        ],
    )


def _sections() -> list[tuple[str, list[cogbuilder.Builder[model.Panel]]]]:
    return [
        ("Load and replicas", _load_and_replicas()),
        ("SLO", _slo()),
        ("KV cache and queues", _kv_and_queues()),
        ("GPUs (DCGM)", _gpus()),
        ("Decision log", [_decision_log()]),
        ("pdscaler", _control_plane()),
    ]


def _load_and_replicas() -> list[cogbuilder.Builder[model.Panel]]:
    load = _graph(
        1, "Offered load", "Requests per second per pool (vLLM counts a request when it "
        "finishes), and pdscaler's forecast of the arrival rate.", "reqps",
        (q.REQUEST_RATE, "{{namespace}} {{role}}"),
        (q.FORECAST_ARRIVAL_RATE, "{{policy}} {{role}} forecast"),
    )  # fmt: skip
    tokens = _graph(
        2, "Token throughput", "Prompt and generated tokens per second per pool.", "short",
        (q.PROMPT_TOKEN_RATE, "{{namespace}} {{role}} prompt"),
        (q.GENERATION_TOKEN_RATE, "{{namespace}} {{role}} generated"),
    )  # fmt: skip
    replicas = _graph(
        REPLICAS_PANEL_ID, "Replicas", "Each pool's replicas: current (spec), desired "
        "(pdscaler's decision), ready and pending. Annotations mark scale changes; hover "
        "one for the reason.", "none",
        (q.CURRENT_REPLICAS, "{{policy}} {{role}} current"),
        (q.DESIRED_REPLICAS, "{{policy}} {{role}} desired"),
        (q.READY_REPLICAS, "{{policy}} {{role}} ready"),
        (q.PENDING_REPLICAS, "{{policy}} {{role}} pending"),
    ).span(24).decimals(0)  # fmt: skip
    return [load, tokens, replicas]


def _slo() -> list[cogbuilder.Builder[model.Panel]]:
    ttft = _graph(
        4, "Time to first token", "TTFT quantiles per pool against the policy's TTFT SLO "
        "(dashed).", "s",
        *((e, f"{{{{namespace}}}} {{{{role}}}} p{_pct(k)}") for k, e in q.TTFT_QUANTILES.items()),
        (q.TTFT_SLO, "SLO {{policy}}"),
    )  # fmt: skip
    itl = _graph(
        5, "Inter-token latency", "ITL quantiles per pool against the policy's ITL SLO "
        "(dashed).", "s",
        *((e, f"{{{{namespace}}}} {{{{role}}}} p{_pct(k)}") for k, e in q.ITL_QUANTILES.items()),
        (q.ITL_SLO, "SLO {{policy}}"),
    )  # fmt: skip
    return [_dashed(ttft, "SLO .*"), _dashed(itl, "SLO .*")]


def _kv_and_queues() -> list[cogbuilder.Builder[model.Panel]]:
    kv = _graph(
        6, "KV cache utilisation", "Mean fraction of the KV cache in use over each pool's "
        "servers.", "percentunit",
        (q.KV_CACHE_UTILISATION, "{{namespace}} {{role}}"),
    ).min(0).max(1)  # fmt: skip
    queues = _graph(
        7, "Requests waiting and running", "Requests waiting to be scheduled and being "
        "processed, summed over each pool.", "short",
        (q.QUEUED_REQUESTS, "{{namespace}} {{role}} waiting"),
        (q.RUNNING_REQUESTS, "{{namespace}} {{role}} running"),
    )  # fmt: skip
    return [kv, queues]


def _gpus() -> list[cogbuilder.Builder[model.Panel]]:
    util = _graph(
        8, "GPU utilisation", "DCGM_FI_DEV_GPU_UTIL, mean over each pool's GPUs.", "percent",
        (q.GPU_UTILISATION, "{{namespace}} {{role}}"),
    ).min(0).max(100)  # fmt: skip
    power = _graph(
        9, "GPU power", "DCGM_FI_DEV_POWER_USAGE, summed over each pool's GPUs.", "watt",
        (q.GPU_POWER, "{{namespace}} {{role}}"),
    )  # fmt: skip
    return [util, power]


def _control_plane() -> list[cogbuilder.Builder[model.Panel]]:
    decisions = _graph(
        11, "Decisions", "Decisions per pool and action within each interval.", "short",
        (q.DECISIONS_BY_ACTION, "{{policy}} {{role}} {{action}}"),
    ).span(8)  # fmt: skip
    ticks = _graph(
        12, "Tick duration", "Wall time of one control-loop tick.", "s",
        *((e, f"p{_pct(k)}") for k, e in q.TICK_DURATION.items()),
    ).span(8)  # fmt: skip
    health = _graph(
        13, "Metrics and actuation", "Metrics source errors, signals by quality, and /scale "
        "writes by HTTP status, per second.", "ops",
        (q.METRICS_SOURCE_ERRORS, "metrics source errors"),
        (q.SIGNAL_QUALITY, "signals {{quality}}"),
        (q.ACTUATIONS, "scale writes {{status_code}}"),
    ).span(8)  # fmt: skip
    forecast = _graph(
        14, "Forecast error", "Recent error of each pool's load forecast.", "short",
        (q.FORECAST_ERROR, "{{policy}} {{role}} {{signal}}"),
    )  # fmt: skip
    replicas = _graph(
        15, "Leaders and replicas", "Replicas holding the leader lease (should be 1), and "
        "running replicas by version.", "short",
        (q.LEADERS, "leaders"),
        (q.REPLICAS_BY_VERSION, "replicas {{version}}"),
    ).decimals(0)  # fmt: skip
    return [decisions, ticks, health, forecast, replicas]


def _decision_log() -> table.Panel:
    return (
        table.Panel()
        .id(10)
        .title("Decisions")
        .description(
            "pdscaler's decision log, newest first (at most 1000 rows). The API columns "
            "open the decision and the policy version in pdscaler's API."
        )
        .datasource(POSTGRES)
        .with_target(Sql(q.DECISION_LOG_SQL, POSTGRES))
        .height(12)
        .span(24)
        .filterable(True)
        .override_by_name("decided_at", [model.DynamicConfigValue("unit", "dateTimeAsIso")])
        .override_by_name("decision_path", _api_link("Decision in the API"))
        .override_by_name("version_path", _api_link("Policy version in the API"))
    )


def _api_link(title: str) -> list[model.DynamicConfigValue]:
    return [
        model.DynamicConfigValue(
            "links", [{"title": title, "url": "${api}${__value.raw}", "targetBlank": True}]
        )
    ]


def _pct(quantile: str) -> str:
    return f"{float(quantile) * 100:g}"


def main(argv: list[str] | None = None) -> int:
    """Write the dashboard JSON (to the path given, or the checked-in file)."""
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else OUTPUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(), encoding="utf-8")
    print(f"wrote {out} (dashboard {DASHBOARD_UID}, /d/{DASHBOARD_UID}/{DASHBOARD_SLUG})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

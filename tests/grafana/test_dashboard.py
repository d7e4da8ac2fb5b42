"""The checked-in dashboard is what the generator makes, and fits its provisioning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pdscaler.grafana import dashboard as generator
from pdscaler.grafana.links import DASHBOARD_SLUG
from pdscaler.grafana.sql import POSTGRES_TYPE
from tests.conftest import REPO

GRAFANA = REPO / "deploy" / "grafana"


def test_checked_in_dashboard_is_up_to_date() -> None:
    checked_in = (REPO / generator.OUTPUT).read_text(encoding="utf-8")

    assert checked_in == generator.render(), "stale dashboard JSON: run `make dashboard`"


def test_generator_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "d" / "pdscaler.json"

    assert generator.main([str(out)]) == 0
    assert out.read_text(encoding="utf-8") == generator.render()


def test_dashboard_identity_and_variables(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}

    assert dashboard["uid"] == generator.DASHBOARD_UID
    assert dashboard["title"].lower() == DASHBOARD_SLUG
    assert {"namespace", "policy", "role"} <= variables.keys()
    for name in ("namespace", "policy", "role", "action"):
        assert variables[name]["multi"]
        assert variables[name]["includeAll"]
        assert "allValue" not in variables[name]  # All means every option, see expand.py
    assert variables["policy"]["query"].endswith("ORDER BY 1")
    assert "$namespace" in variables["policy"]["query"]


def test_panel_ids_are_unique_and_annotations_mark_the_replicas_graph(
    dashboard: dict[str, Any],
) -> None:
    panels = {p["id"]: p for p in dashboard["panels"]}
    (annotation,) = [a for a in dashboard["annotations"]["list"] if "target" in a]

    assert len(panels) == len(dashboard["panels"])
    assert annotation["filter"] == {"exclude": False, "ids": [generator.REPLICAS_PANEL_ID]}
    assert panels[generator.REPLICAS_PANEL_ID]["title"] == "Replicas"


def test_panels_cover_the_required_signals(dashboard: dict[str, Any]) -> None:
    exprs = " ".join(t.get("expr", "") for p in dashboard["panels"] for t in p.get("targets", []))

    for name in (
        "vllm:request_success_total", "pdscaler_current_replicas", "pdscaler_desired_replicas",
        "vllm:time_to_first_token_seconds_bucket", "vllm:inter_token_latency_seconds_bucket",
        "pdscaler_slo_ttft_seconds", "pdscaler_slo_itl_seconds", "vllm:kv_cache_usage_perc",
        "vllm:num_requests_waiting", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_POWER_USAGE",
        "pdscaler_decisions_total", "pdscaler_tick_duration_seconds_bucket",
    ):  # fmt: skip
        assert name in exprs, name


def test_provisioned_data_sources_are_the_dashboard_defaults(dashboard: dict[str, Any]) -> None:
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "pdscaler.yaml").read_text()
    )
    by_uid = {d["uid"]: d for d in provisioned["datasources"]}
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}

    assert by_uid[generator.PROMETHEUS_UID]["type"] == variables["prometheus"]["query"]
    assert by_uid[generator.POSTGRES_UID]["type"] == variables["postgres"]["query"]
    assert variables["postgres"]["query"] == POSTGRES_TYPE
    assert variables["prometheus"]["current"]["value"] == generator.PROMETHEUS_UID
    assert variables["postgres"]["current"]["value"] == generator.POSTGRES_UID


def test_dashboard_provider_loads_files() -> None:
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "pdscaler.yaml").read_text()
    )

    (entry,) = provider["providers"]
    assert provider["apiVersion"] == 1
    assert entry["type"] == "file"
    assert entry["options"]["path"]

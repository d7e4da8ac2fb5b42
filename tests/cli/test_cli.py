"""The pdscaler command, run in-process (and once as a real process)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from pdscaler.cli import main
from pdscaler.config import Settings
from pdscaler.domain.policy import Role, parse_policy
from pdscaler.grafana.links import parse_dashboard_url
from pdscaler.store.db import Database
from pdscaler.store.decisions import DecisionStore
from pdscaler.store.policies import PolicyStore
from pdscaler.wiring import build_app
from tests.conftest import POLICIES, TOKENS
from tests.factories import decision, policy_doc

BAD_POLICY = """\
apiVersion: pdscaler.io/v1alpha1
kind: PDScalingPolicy
metadata: {name: broken}
spec:
  prefill:
    scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: p}
    minReplicas: 9
    maxReplicas: 2
    metrics: [{type: QueuedRequests, targetPerReplica: 4}]
  decode:
    scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: d}
    maxReplicas: 2
    metrics: [{type: KVCacheUtilization, target: 0.8}]
"""


@pytest.fixture
def sqlite_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("PDSCALER_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("PDSCALER_DATABASE__URL", raising=False)
    return tmp_path


def test_validate_accepts_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "validate", "-f", str(POLICIES)]) == 0
    assert capsys.readouterr().out.count("ok ") == len(list(POLICIES.glob("*.yaml")))


def test_validate_names_the_bad_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.yaml").write_text(BAD_POLICY)

    assert main(["policy", "validate", "-f", str(tmp_path / "bad.yaml")]) == 1
    assert "spec.prefill.minReplicas: must not exceed maxReplicas" in capsys.readouterr().out


def test_validate_reports_unreadable_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "x.yaml").write_text("spec: [unclosed\n")

    assert main(["policy", "validate", "-f", str(tmp_path)]) == 1
    assert "invalid" in capsys.readouterr().out


def test_db_upgrade_then_apply_straight_to_the_database(
    sqlite_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "current"]) == 1
    assert main(["db", "upgrade"]) == 0
    assert main(["db", "current"]) == 0

    assert main(["policy", "apply", "-f", str(POLICIES), "--comment", "gitops"]) == 0
    first = capsys.readouterr().out
    assert main(["policy", "apply", "-f", str(POLICIES)]) == 0
    second = capsys.readouterr().out

    examples = len(list(POLICIES.glob("*.yaml")))
    assert first.count(" created") == examples
    assert second.count(" unchanged") == examples


def test_apply_writes_nothing_if_any_file_is_invalid(
    sqlite_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "policies"
    shutil.copytree(POLICIES, folder)
    (folder / "zz-broken.yaml").write_text(BAD_POLICY)
    main(["db", "upgrade"])

    assert main(["policy", "apply", "-f", str(folder)]) == 1
    assert "zz-broken.yaml" in capsys.readouterr().out
    assert main(["db", "downgrade", "base"]) == 0  # the tables were empty: nothing to lose


def test_serve_refuses_a_schema_not_at_head(
    sqlite_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve"]) == 1
    assert "run `pdscaler db upgrade`" in capsys.readouterr().err


def test_bad_settings_exit_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PDSCALER_API__PORT", "http")

    assert main(["serve"]) == 2
    assert "PDSCALER_API__PORT" in capsys.readouterr().err


def test_token_new_prints_a_digest_entry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "new", "--name", "ci", "--role", "editor"]) == 0
    out = capsys.readouterr().out
    assert '"role": "editor"' in out
    assert '"sha256": "' in out


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """``app`` served by uvicorn on a loopback port; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def live_api(settings: Settings, db: Database) -> Iterator[str]:
    """The real app served by uvicorn on a loopback port."""
    with served(build_app(settings, db)) as url:
        yield url


def test_apply_through_the_api_then_tail(
    live_api: str, db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["policy", "apply", "-f", str(POLICIES), "--api", live_api, "--token"]

    assert main([*args, TOKENS["editor"]]) == 0
    assert main([*args, TOKENS["editor"]]) == 0
    assert main([*args, TOKENS["viewer"]]) == 0  # nothing to change, so nothing to refuse
    out = capsys.readouterr().out
    examples = len(list(POLICIES.glob("*.yaml")))
    assert (out.count(" created"), out.count(" unchanged")) == (examples, 2 * examples)
    assert {p.updated_by for p in PolicyStore(db).all()} == {"editor-user"}
    tail = ["decisions", "tail", "--api", live_api, "--token", TOKENS["viewer"], "--no-follow"]
    assert main(tail) == 0


def test_apply_through_the_api_without_rights_fails(
    live_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["policy", "apply", "-f", str(POLICIES), "--api", live_api]

    assert main([*args, "--token", TOKENS["viewer"]]) == 1
    assert "HTTP 403" in capsys.readouterr().err


def test_module_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pdscaler", "--version"], capture_output=True, text=True, check=True
    )

    assert result.stdout.startswith("pdscaler ")


def test_a_policy_defined_twice_is_invalid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(POLICIES / "vllm-deployments.yaml", tmp_path / "a.yaml")
    shutil.copy(POLICIES / "vllm-deployments.yaml", tmp_path / "b.yaml")

    assert main(["policy", "validate", "-f", str(tmp_path)]) == 1
    assert "inference/llama-8b is already defined in" in capsys.readouterr().out


def test_unreachable_database_is_a_message_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PDSCALER_DATABASE__URL", "postgresql+psycopg://nobody@127.0.0.1:1/x")
    monkeypatch.setenv("PDSCALER_DATABASE__CONNECT_TIMEOUT", "1")

    assert main(["db", "upgrade"]) == 1
    assert main(["serve"]) == 1
    assert capsys.readouterr().err.count("cannot reach the database") == 2


def test_explain_prints_each_pools_decision_and_its_dashboard_link(
    settings: Settings, db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    grafana = settings.grafana.model_copy(update={"url": "https://grafana.example.org"})
    app = build_app(settings.model_copy(update={"grafana": grafana}), db)
    PolicyStore(db).create(parse_policy(policy_doc(name="llama")), author="t", comment="",
                           now=datetime.now(UTC))  # fmt: skip
    DecisionStore(db).record(decision(datetime.now(UTC), role=Role.DECODE))

    with served(app) as url:
        assert main(["explain", "inference/llama", "--api", url, "--token",
                     TOKENS["viewer"]]) == 0  # fmt: skip

    out = capsys.readouterr().out
    (link,) = [line.split("grafana: ", 1)[1] for line in out.splitlines() if "grafana: " in line]
    view = parse_dashboard_url(link)
    assert (view.namespace, view.policy, view.role) == ("inference", "llama", "decode")


def test_db_retention_needs_an_age_and_reports_what_it_deleted(
    sqlite_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["db", "upgrade"]) == 0

    assert main(["db", "retention"]) == 2
    assert "--older-than" in capsys.readouterr().err
    assert main(["db", "retention", "--older-than", "2160h"]) == 0
    assert capsys.readouterr().out.startswith("deleted 0 decisions decided before ")
    monkeypatch.setenv("PDSCALER_DATABASE__RETENTION", "P30D")
    assert main(["db", "retention"]) == 0
    assert main(["db", "retention", "--older-than", "1h"]) == 1  # less than a day: refused

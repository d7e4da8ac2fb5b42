"""No secret of the settings reaches the decision log, the API's bodies, /metrics or the
log, even when the errors pdscaler records carry them (a misbehaving API server echoing a
header, a URL with its password)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from pdscaler import wiring
from pdscaler.config import LogFormat, Settings
from pdscaler.control.clock import FakeClock
from pdscaler.control.fakes import FakeMetricsSource, RecordingActuator
from pdscaler.domain.errors import Unavailable
from pdscaler.domain.policy import Role, ScaleTargetRef, parse_policy
from pdscaler.domain.signals import PoolKey, PoolSignals, ScaleState, Signal, SignalName
from pdscaler.logs import configure_logging, secrets_of
from pdscaler.store.db import Database
from pdscaler.store.policies import PolicyStore
from tests.conftest import TOKENS, auth
from tests.factories import policy_doc
from tests.test_logs import all_secrets_settings, root_logging  # noqa: F401 (a fixture)

NS = "inference"


def test_no_secret_reaches_rows_bodies_metrics_or_logs(
    db: Database,
    clock: FakeClock,
    settings: Settings,
    tmp_path: Path,
    root_logging: logging.Logger,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = all_secrets_settings(tmp_path)
    configured = secret.model_copy(update={
        "api": settings.api.model_copy(update={
            "cursor_secret": secret.api.cursor_secret}),  # the test tokens, the secret cursor key
        "loop": settings.loop.model_copy(update={"enabled": True}),
    })  # fmt: skip
    secrets = secrets_of(configured)
    configure_logging("INFO", LogFormat.JSON, secrets)
    # what a misbehaving server might echo: every secret pdscaler holds, and a bearer token
    leak = " ".join(secrets) + " Authorization: Bearer not-configured-token"
    metrics, actuator = FakeMetricsSource(), RecordingActuator()
    for name in ("llama", "unreadable"):
        doc = policy_doc(name=name)
        for role in Role:
            doc["spec"][role.value]["scaleTargetRef"]["name"] = f"{name}-{role.value}"
            actuator.add(NS, f"{name}-{role.value}", 2)
        PolicyStore(db).create(parse_policy(doc), author="t", comment="", now=clock.now())
    metrics.set(PoolKey(NS, "llama", Role.PREFILL), PoolSignals(
        {SignalName.QUEUED_PREFILL_TOKENS: Signal.fresh(80_000, clock.now())}))  # fmt: skip
    actuator.fail_next.append(Unavailable(f"PUT https://u:url-pass-1@kube/scale: {leak}"))
    read_scale = actuator.read_scale

    def read(namespace: str, target: ScaleTargetRef) -> ScaleState:
        if target.name.startswith("unreadable"):
            raise Unavailable(f"GET {target.name}: {leak}")
        return read_scale(namespace, target)

    actuator.read_scale = read  # type: ignore[method-assign]
    runtime = wiring.build_runtime(configured, db, clock, wiring.Backends(metrics, actuator))
    assert runtime.loop is not None

    runtime.loop.run_once()

    with db.engine.connect() as connection:
        rows = [str(tuple(r)) for r in connection.execute(text("SELECT * FROM decisions"))]
    assert any("url-pass-1" not in r and "Unavailable" in r for r in rows)  # errors recorded
    with TestClient(runtime.app) as client:
        bodies = [
            client.get(path, headers=auth("admin")).text
            for path in ("/v1/decisions/export", "/v1/decisions?limit=100", "/metrics",
                         "/readyz", "/v1/policies/inference/llama/explain",
                         "/v1/policies/inference/nope", "/v1/decisions?since=x")
        ]  # fmt: skip
    logs = capsys.readouterr().err
    assert "scale of inference/llama-prefill failed" in logs  # the error was logged
    # the API tokens too: pdscaler holds only their digests, and must never echo them
    for secret_value in [*secrets, *TOKENS.values(), "not-configured-token", "url-pass-1"]:
        for where, found in (("rows", rows), ("API bodies", bodies), ("log", [logs])):
            assert not any(secret_value in f for f in found), (secret_value, where)

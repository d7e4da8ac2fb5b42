"""GET /v1/decisions latency at 1,000,000 decision rows in Postgres, over loopback.

Seeds a dedicated database (reused on the next run if it already holds the rows), serves
the real app with uvicorn in its own process, and times pages of 100 decisions filtered by
policy and a time range, the query a Grafana data link or an operator makes. Prints
p50/p90/p99 and requests per second. A benchmark, not a test: it prints, it does not judge.

    .venv/bin/python bench/api_decisions.py [--rows 1000000] [--requests 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
import yaml
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from pdscaler.api.auth import token_digest
from pdscaler.domain.policy import parse_policy
from pdscaler.store import migrate
from pdscaler.store.db import Database, create_db_engine
from pdscaler.store.models import DecisionRow
from pdscaler.store.policies import PolicyStore

ADMIN_URL = os.environ.get(
    "PDSCALER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
DATABASE = "pdscaler_bench"
POLICIES = 50
TICK_S = 15
START = datetime(2026, 1, 1, tzinfo=UTC)
TOKEN = "bench-token"

# One realistic decision: the shape the control loop writes (signals with quality, a
# four-step chain), so that the rows are as wide as real ones.
STEPS = json.dumps([
    {"name": "recommend", "value": 7, "reason": "QueuedPrefillTokens", "message": "48k > 6x8k"},
    {"name": "tolerance", "value": 7, "reason": "OutsideTolerance", "message": "ratio 1.17"},
    {"name": "stabilize", "value": 7, "reason": "ScaleUpStabilized", "message": "window 0s"},
    {"name": "limit", "value": 7, "reason": "WithinRange", "message": "1 <= 7 <= 32"},
])  # fmt: skip
SIGNALS = json.dumps({
    name: {"value": 1234.5, "quality": "fresh", "sampledAt": "2026-01-01T00:00:00Z"}
    for name in ("arrivalRate", "queuedPrefillTokens", "kvCacheUtilization", "ttftP90Ms",
                 "itlP90Ms", "runningRequests", "gpuUtilization")
})  # fmt: skip


def main() -> int:
    args = _args()
    url = _database_url()
    db = Database(create_db_engine(url, pool_size=4))
    migrate.upgrade(db.engine)
    _seed(db, args.rows)
    port = _free_port()
    server = _serve(url, port)
    try:
        latencies_ms, wall_s = _measure(port, args.requests, _span_seconds(args.rows))
    finally:
        server.terminate()
        server.wait(timeout=10)
    _report(args.rows, latencies_ms, wall_s)
    return 0


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=3000)
    return parser.parse_args()


def _database_url() -> str:
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        exists = connection.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": DATABASE}
        )
        if not exists:
            connection.execute(text(f'CREATE DATABASE "{DATABASE}"'))
    admin.dispose()
    return make_url(ADMIN_URL).set(database=DATABASE).render_as_string(hide_password=False)


def _seed(db: Database, rows: int) -> None:
    with db.transaction() as session:
        have = session.scalar(select(func.count()).select_from(DecisionRow)) or 0
    if have == rows:
        print(f"reusing {rows:,} seeded decisions", file=sys.stderr)
        return
    started = time.monotonic()
    with db.engine.begin() as connection:
        connection.execute(text("TRUNCATE decisions, policy_versions, policies RESTART IDENTITY"))
    store = PolicyStore(db)
    with open(_example_policy()) as f:
        template = yaml.safe_load(f)
    for i in range(POLICIES):
        template["metadata"] = {"name": f"model-{i:02d}", "namespace": "inference"}
        store.create(parse_policy(template), author="bench", comment="", now=START)
    # Two rows (prefill and decode) per policy per tick, ticks 15 s apart, generated in the
    # server so that a million rows take seconds, not minutes.
    with db.engine.begin() as connection:
        connection.execute(
            text("""
            INSERT INTO decisions (
              tick_id, decided_at, policy_id, policy_namespace, policy_name, policy_version,
              role, target_api_version, target_kind, target_name, mode, action, status,
              current_replicas, ready_replicas, pending_replicas, raw_recommendation,
              desired_replicas, steps, signals, forecast, error, resource_version_read,
              resource_version_written, leader_identity, updated_at)
            SELECT
              md5((n / 2)::text), :start + ((n / 2 / :policies) * :tick) * interval '1 second',
              p.id, p.namespace, p.name, 1,
              CASE WHEN n % 2 = 0 THEN 'prefill' ELSE 'decode' END, 'apps/v1', 'Deployment',
              p.name || CASE WHEN n % 2 = 0 THEN '-prefill' ELSE '-decode' END, 'active',
              (ARRAY['none', 'none', 'none', 'scale_up', 'scale_down'])[1 + n % 5],
              (ARRAY['skipped', 'skipped', 'skipped', 'applied', 'applied'])[1 + n % 5],
              6, 6, 0, 7, 6 + (n % 5 = 3)::int - (n % 5 = 4)::int,
              CAST(:steps AS jsonb), CAST(:signals AS jsonb), NULL, NULL, (n * 7)::text,
              NULL, 'pdscaler-0', :start + ((n / 2 / :policies) * :tick) * interval '1 second'
            FROM generate_series(0, :rows - 1) AS n
            JOIN policies p ON p.name = 'model-' || lpad(((n / 2) % :policies)::text, 2, '0')
            """),
            {"start": START, "policies": POLICIES, "tick": TICK_S, "rows": rows,
             "steps": STEPS, "signals": SIGNALS},
        )  # fmt: skip
        connection.execute(text("ANALYZE decisions"))
    print(f"seeded {rows:,} decisions in {time.monotonic() - started:.1f} s", file=sys.stderr)


def _example_policy() -> str:
    return os.path.join(os.path.dirname(__file__), "..", "policies", "vllm-deployments.yaml")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(url: str, port: int) -> subprocess.Popen[bytes]:
    tokens = json.dumps([{"name": "bench", "role": "viewer", "sha256": token_digest(TOKEN)}])
    env = {
        **os.environ,
        "PDSCALER_DATABASE__URL": url,
        "PDSCALER_API__PORT": str(port),
        "PDSCALER_API__TOKENS": tokens,
        "PDSCALER_LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen([sys.executable, "-m", "pdscaler", "serve"], env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("the API did not become ready")


def _measure(port: int, requests: int, span_s: int) -> tuple[list[float], float]:
    rng = random.Random(7)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
        for _ in range(100):  # warm-up: connections, caches, code paths
            client.get("/v1/decisions", params=_query(rng, span_s))
        latencies_ms = []
        started = time.perf_counter()
        for _ in range(requests):
            params = _query(rng, span_s)
            t0 = time.perf_counter()
            response = client.get("/v1/decisions", params=params)
            latencies_ms.append((time.perf_counter() - t0) * 1000)
            if response.status_code != 200 or len(response.json()["items"]) != 100:
                raise SystemExit(f"unexpected answer: {response.status_code} {response.text[:200]}")
        return latencies_ms, time.perf_counter() - started


def _span_seconds(rows: int) -> int:
    return rows // (2 * POLICIES) * TICK_S


def _query(rng: random.Random, span_s: int) -> dict[str, str | int]:
    """One policy, a 6-hour window somewhere in the history: 100 of its ~2,900 decisions."""
    since = START + timedelta(seconds=rng.randrange(0, span_s - 6 * 3600))
    return {
        "policy": f"model-{rng.randrange(POLICIES):02d}",
        "since": since.isoformat(),
        "until": (since + timedelta(hours=6)).isoformat(),
        "limit": 100,
    }


def _report(rows: int, latencies_ms: list[float], wall_s: float) -> None:
    quantiles = statistics.quantiles(latencies_ms, n=100, method="inclusive")
    print(f"GET /v1/decisions  rows={rows:,}  page=100  filter=policy+6h range  "
          f"requests={len(latencies_ms):,}  sequential keep-alive client on loopback")  # fmt: skip
    print(f"  p50 {quantiles[49]:.2f} ms   p90 {quantiles[89]:.2f} ms   "
          f"p99 {quantiles[98]:.2f} ms   max {max(latencies_ms):.2f} ms   "
          f"{len(latencies_ms) / wall_s:.0f} req/s")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())

"""Fuzz the REST API against its own OpenAPI document, with more examples than the test.

Runs the same fuzzing as tests/fuzz (schemathesis: every operation, valid and invalid
requests, as an admin, a viewer and an anonymous caller) on a throw-away Postgres database,
or on SQLite with --sqlite, and prints the counts: operations, cases, failures, and each
distinct failure with a curl command that reproduces it. Exits 1 when anything failed.

    .venv/bin/python bench/fuzz_api.py [--examples 100] [--seed 0] [--sqlite]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the harness lives in tests/

from pdscaler import wiring
from pdscaler.api.auth import token_digest
from pdscaler.config import load_settings
from pdscaler.control.clock import FakeClock
from pdscaler.store import migrate
from pdscaler.store.db import Database, create_db_engine
from tests.conftest import POSTGRES_ADMIN_URL, TOKENS, TempPostgres
from tests.fuzz.harness import Report, fuzz

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100,
                        help="generated requests per operation, caller and mode")  # fmt: skip
    parser.add_argument("--anonymous-examples", type=int, default=20,
                        help="the same without a token")  # fmt: skip
    parser.add_argument("--coverage", type=int, default=10000,
                        help="boundary cases per operation, at most")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of Postgres")
    args = parser.parse_args()
    # Failures are reported below; the app's own log of each 500 would only repeat them.
    logging.disable(logging.CRITICAL)

    with tempfile.TemporaryDirectory() as data_dir:
        server = None if args.sqlite else TempPostgres(POSTGRES_ADMIN_URL)
        url = f"sqlite:///{data_dir}/fuzz.db" if server is None else server.create()
        db = Database(create_db_engine(url))
        try:
            migrate.upgrade(db.engine)
            tokens = [
                {"name": f"{role}-user", "role": role, "sha256": token_digest(token)}
                for role, token in TOKENS.items()
            ]
            settings = load_settings(
                data_dir=Path(data_dir), api={"tokens": tokens, "cursor_secret": "s" * 32}
            )
            app = wiring.build_app(settings, db, FakeClock(NOW))
            started = time.perf_counter()
            report = fuzz(app, db, NOW, examples=args.examples,
                          anonymous_examples=args.anonymous_examples, coverage=args.coverage,
                          seed=args.seed, on_operation=_progress)  # fmt: skip
            elapsed = time.perf_counter() - started
        finally:
            db.dispose()
            if server is not None:
                server.drop_all()

    backend = "sqlite" if args.sqlite else "postgres"
    print(
        f"\n{backend}, {args.examples} examples ({args.anonymous_examples} anonymous), "
        f"{args.coverage} boundary cases at most, seed {args.seed}: {report.summary()}"
    )
    print(f"{elapsed:.1f} s, {report.cases / elapsed:.0f} cases/s")
    for finding in report.findings.values():
        print(finding.describe())
    return 1 if report.findings else 0


def _progress(operation: str, report: Report) -> None:
    print(f"{operation:60} {report.cases:6} cases {report.failures:4} failures", flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""The API against its own OpenAPI document: generated requests to every route, as an
admin, a viewer and without a token, never get a 5xx, and every response has a status,
content type and body that the document declares. A 4xx to a write leaves every table as
it was. See tests/fuzz/harness.py; bench/fuzz_api.py runs the same with more examples.

Postgres only: it is the stricter backend for odd input (it refuses NUL characters and
checks integer ranges where SQLite stores what it is given), the one production runs, and
one fuzzing run takes most of a minute here; the API's SQLite behaviour is covered by
tests/api, which run on both.
"""

from __future__ import annotations

import logging

import pytest

from pdscaler import wiring
from pdscaler.config import Settings
from pdscaler.control.clock import FakeClock
from pdscaler.store.db import Database
from tests.fuzz.harness import fuzz

# Bounded for a 2-core machine: about 2,500 requests in about a minute. Fixed seed, no
# example database: every run sends the same requests.
EXAMPLES = 20
ANONYMOUS_EXAMPLES = 4
COVERAGE = 100
SEED = 20260301


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_every_route_answers_as_its_openapi_document_says(
    settings: Settings, db: Database, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    app = wiring.build_app(settings, db, clock)
    caplog.set_level(logging.CRITICAL)  # a 500's traceback would be reported twice

    report = fuzz(app, db, clock.now(), examples=EXAMPLES,
                  anonymous_examples=ANONYMOUS_EXAMPLES, coverage=COVERAGE, seed=SEED)  # fmt: skip

    print(report.summary())
    served = sum(len(methods) for methods in app.openapi()["paths"].values())
    assert report.operations == served
    assert not report.findings, "\n".join(f.describe() for f in report.findings.values())

"""Fuzzing the API against its own OpenAPI document with schemathesis.

Every operation the served document lists is called with generated requests, valid
(positive) and invalid (negative) by its declared schema, as three callers: an admin
token, a viewer token and no token. Each response must not be a 5xx, must have a status
code and content type that the document declares for the operation, and must match the
declared schema. A write that fails with a 4xx must also leave every table as it was.
Then, as the admin, schemathesis's boundary cases for each operation are sent too.

Before each operation the tables are emptied and seeded with one policy at two versions
and a few decisions, and half of the generated requests have their path parameters pinned
to those objects, so that routes below ``/{namespace}/{name}`` and ``/{decision_id}`` get
past the 404 and reach their validation and storage code.

Shared by the pytest test (small and bounded) and ``bench/fuzz_api.py`` (more examples).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import hypothesis
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, strategies
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import func, select

from pdscaler.domain.policy import Role, parse_policy
from pdscaler.domain.versioning import ChangeKind
from pdscaler.store.db import Database
from pdscaler.store.decisions import DecisionStore
from pdscaler.store.models import Base
from pdscaler.store.policies import PolicyStore
from tests.conftest import TOKENS
from tests.factories import decision, policy_doc

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
CALLERS: dict[str, dict[str, str]] = {
    "admin": {"Authorization": f"Bearer {TOKENS['admin']}"},
    "viewer": {"Authorization": f"Bearer {TOKENS['viewer']}"},
    "anonymous": {},
}
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Finding:
    """One kind of failure (operation, caller, check, status) and the first request that
    showed it; :attr:`Report.failures` counts every case that failed."""

    operation: str
    caller: str
    check: str
    status: int | None
    message: str
    curl: str

    def describe(self) -> str:
        return (
            f"{self.operation} as {self.caller}: {self.check} (status {self.status})\n"
            f"    {self.message}\n    {self.curl}"
        )


@dataclass
class Report:
    operations: int = 0
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: int = 0  # failing cases, counting repeats of the same finding
    findings: dict[tuple[str, str, str, int | None], Finding] = field(default_factory=dict)

    def record(self, finding: Finding) -> None:
        self.failures += 1
        self.findings.setdefault(
            (finding.operation, finding.caller, finding.check, finding.status), finding
        )

    def summary(self) -> str:
        statuses = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
        return (
            f"{self.operations} operations, {self.cases} cases, {self.failures} failures "
            f"({len(self.findings)} distinct); statuses {statuses}"
        )


@dataclass(frozen=True)
class Seeded:
    """The objects the seed wrote, as path parameters that name them."""

    namespace: str
    name: str
    version: int
    decision_id: int

    def path_parameters(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "version": self.version,
            "decision_id": self.decision_id,
        }


def reset(db: Database, now: datetime) -> Seeded:
    """Empty every table, then write one policy at two versions and four decisions."""
    with db.engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())
    policies = PolicyStore(db)
    policies.create(parse_policy(policy_doc()), author="seed", comment="", now=now)
    stored = policies.change(
        "inference",
        "llama",
        ChangeKind.UPDATE,
        lambda _current: parse_policy(policy_doc({"spec": {"coldStartSeconds": 60}})),
        expected_version=1,
        author="seed",
        comment="second version",
        now=now,
    )
    store = DecisionStore(db)
    ids = [
        store.record(decision(now - timedelta(seconds=15 * tick), role=role))
        for tick in range(2)
        for role in Role
    ]
    return Seeded("inference", "llama", stored.version, ids[0])


def row_counts(db: Database) -> tuple[int, ...]:
    with db.transaction() as session:
        return tuple(
            session.scalar(select(func.count()).select_from(table)) or 0
            for table in Base.metadata.sorted_tables
        )


def fuzz(
    app: FastAPI,
    db: Database,
    now: datetime,
    *,
    examples: int,
    anonymous_examples: int,
    coverage: int,
    seed: int = 0,
    on_operation: Callable[[str, Report], None] | None = None,
) -> Report:
    """Fuzz every operation of the app's OpenAPI document.

    Generated requests: ``examples`` per operation and mode for each token, and
    ``anonymous_examples`` without one (every one past the health routes is a 401). Then,
    as the admin, up to ``coverage`` of schemathesis's boundary cases for the operation
    (lengths and ranges at and past their limits, each enum value, missing and extra
    parameters, other methods), spread evenly over all of them. Deterministic for a seed.
    """
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    report = Report()
    for operation in _operations(schema):
        report.operations += 1
        for caller, headers in CALLERS.items():
            count = examples if headers else anonymous_examples
            for mode in MODES:
                strategy = _strategy(operation, mode, reset(db, now))
                _run(strategy, count, seed, partial(_call, caller=caller, headers=headers,
                                                    db=db, report=report))  # fmt: skip
        if coverage:
            seeded = reset(db, now)
            for case in _coverage_cases(schema, operation, seeded, coverage):
                _call(case, caller="admin", headers=CALLERS["admin"], db=db, report=report)
        if on_operation is not None:
            on_operation(operation.label, report)
    return report


def _operations(schema: Any) -> Iterator[Any]:
    for result in schema.get_all_operations():
        yield result.ok()


def _coverage_cases(schema: Any, operation: Any, seeded: Seeded, limit: int) -> list[Case]:
    """Up to ``limit`` boundary cases, evenly spread; valid path parameters name the seed."""
    cases = list(
        schema.iter_coverage_cases(
            operation,
            generation_modes=list(MODES),
            generation_config=schema.config.generation_for(operation=operation),
        )
    )
    chosen = cases[:: max(1, -(-len(cases) // limit))]
    pinned = seeded.path_parameters()
    for case in chosen:
        path = case.meta.components.get(ParameterLocation.PATH) if case.meta else None
        if case.path_parameters and (path is None or path.mode.is_positive):
            case.path_parameters = {k: pinned.get(k, v) for k, v in case.path_parameters.items()}
    return chosen


def _strategy(operation: Any, mode: GenerationMode, seeded: Seeded) -> Any:
    generated = operation.as_strategy(generation_mode=mode)
    declared = {p.name for p in operation.path_parameters}
    if not declared:
        return generated
    pinned = {k: v for k, v in seeded.path_parameters().items() if k in declared}
    return strategies.one_of(
        generated, operation.as_strategy(generation_mode=mode, path_parameters=pinned)
    )


def _run(strategy: Any, examples: int, seed: int, test: Callable[[Case], None]) -> None:
    @hypothesis.seed(seed)
    @hypothesis.settings(
        max_examples=examples,
        database=None,
        deadline=None,
        derandomize=False,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @hypothesis.given(strategy)
    def run(case: Case) -> None:
        test(case)

    # An operation without parameters has nothing to make invalid: the positive run did it.
    with contextlib.suppress(Unsatisfiable):
        run()


def _call(
    case: Case, *, caller: str, headers: dict[str, str], db: Database, report: Report
) -> None:
    if not headers:  # the document declares a bearer scheme; this caller sends none
        case.headers = {
            k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"
        }
    writes = case.method.upper() in WRITES
    before = row_counts(db) if writes else ()
    label = case.operation.label
    try:
        response = case.call(headers=headers)
    except Exception as e:  # the app raised past its error handlers
        report.cases += 1
        report.record(Finding(label, caller, "server raised", None,
                              f"{type(e).__name__}: {e}"[:500], _curl(case, headers)))  # fmt: skip
        return
    report.cases += 1
    report.statuses[response.status_code] += 1
    try:
        case.validate_response(response, checks=CHECKS, headers=headers)
    except FailureGroup as group:
        for failure in group.exceptions:
            report.record(Finding(label, caller, failure.title, response.status_code,
                                  _one_line(failure.message), _curl(case, headers)))  # fmt: skip
    if writes and response.status_code >= 400 and row_counts(db) != before:
        report.record(Finding(label, caller, "wrote rows on an error", response.status_code,
                              response.text[:300], _curl(case, headers)))  # fmt: skip


def _curl(case: Case, headers: dict[str, str]) -> str:
    return _one_line(case.as_curl_command(headers=headers))[:600]


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]

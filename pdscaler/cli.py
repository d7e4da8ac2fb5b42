"""The ``pdscaler`` command: serve, demo, db, policy, decisions, bench, token."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from pdscaler import __version__
from pdscaler.config import Duration, Role, Settings, SettingsError, load_settings
from pdscaler.domain.errors import PdscalerError
from pdscaler.logs import configure_logging, secrets_of

if TYPE_CHECKING:
    from pdscaler.client import PdscalerClient
    from pdscaler.wiring import Runtime

log = logging.getLogger("pdscaler")
Command = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command: Command = args.command
    try:
        return command(args)
    except SettingsError as e:
        print(f"pdscaler: {e}", file=sys.stderr)
        return 2
    except (PdscalerError, FileNotFoundError) as e:
        print(f"pdscaler: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pdscaler", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pdscaler {__version__}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the API, and the control loop when enabled")
    serve.set_defaults(command=_serve)

    demo = sub.add_parser(
        "demo", help="run the service on a simulated cluster replaying a public trace"
    )
    demo.add_argument(
        "--policies",
        type=Path,
        default=None,
        help="example policies to load for the API (default: the bundled ones)",
    )
    demo.add_argument(
        "--speed", type=float, default=20.0, help="simulated seconds per real second (default 20)"
    )
    demo.add_argument(
        "--serve", action="store_true", help="keep the API up after the replay, until Ctrl-C"
    )
    demo.set_defaults(command=_demo)

    db = sub.add_parser("db", help="database schema").add_subparsers(required=True)
    up = db.add_parser("upgrade", help="migrate to the newest schema (or --revision)")
    up.add_argument("--revision", default="head")
    up.set_defaults(command=_db_upgrade)
    retention = db.add_parser(
        "retention", help="delete decisions older than an age, and record the run"
    )
    retention.add_argument(
        "--older-than", type=_duration, default=None,
        help="e.g. 2160h or P90D (default: PDSCALER_DATABASE__RETENTION)",
    )  # fmt: skip
    retention.set_defaults(command=_db_retention)
    down = db.add_parser("downgrade", help="migrate back to REVISION ('base' empties it)")
    down.add_argument("revision")
    down.set_defaults(command=_db_downgrade)
    db.add_parser("current", help="print the schema revision").set_defaults(command=_db_current)

    policy = sub.add_parser("policy", help="policy files").add_subparsers(required=True)
    validate = policy.add_parser("validate", help="check policy files without saving them")
    validate.add_argument("-f", "--file", type=Path, required=True, help="file or directory")
    validate.set_defaults(command=_policy_validate)
    apply = policy.add_parser("apply", help="create or update policies from files")
    apply.add_argument("-f", "--file", type=Path, required=True, help="file or directory")
    apply.add_argument("--api", help="pdscaler API URL; without it, write the database directly")
    apply.add_argument("--token", default=os.environ.get("PDSCALER_TOKEN"), help="bearer token")
    apply.add_argument("--comment", default="", help="why; kept with each new version")
    apply.set_defaults(command=_policy_apply)

    decisions = sub.add_parser("decisions", help="the decision log").add_subparsers(required=True)
    tail = decisions.add_parser("tail", help="print recent decisions, then follow new ones")
    tail.add_argument("--api", default="http://127.0.0.1:8080", help="pdscaler API URL")
    tail.add_argument("--token", default=os.environ.get("PDSCALER_TOKEN"), help="bearer token")
    tail.add_argument("--namespace")
    tail.add_argument("--policy")
    tail.add_argument("-n", "--lines", type=int, default=20, help="how many to print first")
    tail.add_argument("--no-follow", dest="follow", action="store_false")
    tail.add_argument("--interval", type=float, default=2.0, help="seconds between polls")
    tail.set_defaults(command=_decisions_tail)

    tick = sub.add_parser("tick", help="run the control loop's tick")
    tick.add_argument("--once", action="store_true", required=True, help="one tick, then exit")
    tick.set_defaults(command=_tick)

    explain = sub.add_parser("explain", help="why a policy's pools have their size")
    explain.add_argument("policy", metavar="NAMESPACE/NAME")
    explain.add_argument("--api", default="http://127.0.0.1:8080", help="pdscaler API URL")
    explain.add_argument("--token", default=os.environ.get("PDSCALER_TOKEN"), help="bearer token")
    explain.set_defaults(command=_explain)

    bench = sub.add_parser(
        "bench", help="replay traces under pdscaler and baseline autoscalers, and compare"
    )
    bench.add_argument(
        "traces", nargs="+", type=Path, metavar="TRACE", help="Azure CSV or Mooncake JSONL files"
    )
    bench.add_argument(
        "--out", type=Path, default=Path("bench-out"), help="where JSON and PNGs go (./bench-out)"
    )
    bench.add_argument(
        "--policies",
        type=_policy_names,
        default=None,
        help="comma-separated subset of static-peak,hpa,keda,dynamo,pdscaler (default: all)",
    )
    bench.add_argument(
        "--minutes", type=_positive, default=None, help="replay each trace's first N minutes only"
    )
    bench.add_argument(
        "--rate",
        type=_positive,
        default=None,
        help="request-rate multiplier for every trace (default: per trace, the smallest that "
        "makes static-peak need 16 replicas in its larger pool)",
    )
    bench.set_defaults(command=_bench)

    forecast = sub.add_parser("forecast", help="load forecasting").add_subparsers(required=True)
    backtest = forecast.add_parser(
        "backtest", help="score the forecasting models on a trace's arrival rate, rolling origin"
    )
    backtest.add_argument(
        "--trace", type=Path, required=True, help="an Azure CSV or Mooncake JSONL trace"
    )
    backtest.add_argument("--step", type=_positive, default=5.0, help="seconds per step (5)")
    backtest.add_argument(
        "--horizon", type=_positive, default=65.0, help="seconds ahead to forecast (65)"
    )
    backtest.add_argument(
        "--minutes", type=_positive, default=None, help="the trace's first N minutes only"
    )
    backtest.add_argument(
        "--quantile", type=float, default=0.9, help="pinball loss and quantile model (0.9)"
    )
    backtest.add_argument(
        "--warmup", type=_positive, default=20.0, help="minutes learned before scoring (20)"
    )
    backtest.add_argument("--rate", type=_positive, default=None, help="request-rate multiplier")
    backtest.set_defaults(command=_forecast_backtest)

    token = sub.add_parser("token", help="API tokens").add_subparsers(required=True)
    new = token.add_parser("new", help="make a token and print its settings entry")
    new.add_argument("--name", required=True)
    new.add_argument("--role", choices=[r.value for r in Role], default=Role.VIEWER.value)
    new.set_defaults(command=_token_new)
    return parser


def _policy_names(text: str) -> list[str]:
    from pdscaler.benchmark.suite import parse_policies

    try:
        return parse_policies(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _settings() -> Settings:
    settings = load_settings()
    configure_logging(settings.log_level.value, settings.log_format, secrets_of(settings))
    return settings


def _serve(_args: argparse.Namespace) -> int:
    from pdscaler import wiring

    settings = _settings()
    _run(settings, wiring.build_runtime(settings, wiring.build_database(settings)))
    return 0


def _tick(_args: argparse.Namespace) -> int:
    from pdscaler import wiring
    from pdscaler.control.clock import SystemClock
    from pdscaler.domain.explain import explain
    from pdscaler.store import migrate
    from pdscaler.store.decisions import DecisionFilter, DecisionStore
    from pdscaler.store.policies import PolicyStore

    settings = _settings()
    db = wiring.build_database(settings)
    migrate.require_head(db.engine)
    decisions = DecisionStore(db)
    clock = SystemClock()
    backends = wiring.build_backends(settings, clock)
    controller = wiring.build_controller(settings, PolicyStore(db), decisions, clock, backends)
    leadership = backends.leadership
    if leadership is not None and not leadership.step():
        # Another replica leads: a tick from here would race its writes.
        print(f"not ticking: {leadership.status().message}; stop the running loop, or set "
              "PDSCALER_KUBERNETES__LEADER_ELECTION=false", file=sys.stderr)  # fmt: skip
        return 1
    controller.restore()
    try:
        report = controller.tick()
    finally:
        if leadership is not None:
            leadership.release()
    print(
        f"{report.policies} policies, {report.decisions} decisions, {report.writes} writes, "
        f"{report.failures} failures" + ("" if report.audited else ", AUDIT FAILED")
    )
    page, _ = decisions.page(DecisionFilter(since=report.at), limit=1000)
    for decision in reversed(page):
        r = decision.record
        print(f"{r.policy_namespace}/{r.policy_name}")
        print("\n".join(explain(r, decision.id)))
    return 0 if report.audited else 1


def _explain(args: argparse.Namespace) -> int:
    from pdscaler.client import PdscalerClient

    namespace, _, name = args.policy.partition("/")
    if not name:
        namespace, name = "default", namespace
    body = PdscalerClient(args.api, args.token).explain(namespace, name)
    print(f"{namespace}/{name} at version {body['version']}")
    for pool in body["pools"]:
        print(pool["text"])
        if pool.get("grafanaUrl"):
            print(f"  grafana: {pool['grafanaUrl']}")
    if not body["pools"]:
        print("no decisions yet")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from pdscaler import wiring
    from pdscaler.api.auth import new_token
    from pdscaler.config import ApiToken
    from pdscaler.demo import DemoOptions, run_demo

    settings = _settings()
    token = None
    if not settings.api.tokens:
        token, digest = new_token()
        api = settings.api.model_copy(
            update={
                "tokens": [ApiToken(name="demo-admin", role=Role.ADMIN, sha256=digest)],
                "anonymous_reads": True,
            }
        )
        settings = settings.model_copy(update={"api": api})
    options = DemoOptions(
        speed=args.speed,
        examples=args.policies or _bundled("policies"),
        serve_after=args.serve,
        out=settings.data_dir,
    )
    return run_demo(settings, wiring.build_database(settings), options, token)


def _run(settings: Settings, runtime: Runtime) -> None:
    """Serve the API, with the control loop beside it when enabled, until stopped."""
    import uvicorn

    if runtime.loop is not None:
        runtime.loop.start()
    try:
        # log_config=None: uvicorn's loggers go through the root handler (its format, and
        # its redaction of secrets) instead of handlers of their own
        uvicorn.run(runtime.app, host=settings.api.host, port=settings.api.port,
                    log_level="warning", log_config=None)  # fmt: skip
    finally:
        if runtime.loop is not None:
            runtime.loop.stop()


def _bundled(name: str) -> Path:
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / name, package / f"_{name}"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the bundled {name} directory is missing from this install")


def _db_upgrade(args: argparse.Namespace) -> int:
    from pdscaler import wiring
    from pdscaler.store import migrate

    db = wiring.build_database(_settings())
    migrate.upgrade(db.engine, args.revision)
    print(f"schema at {migrate.current_revision(db.engine)}")
    return 0


def _duration(text: str) -> timedelta:
    try:
        return TypeAdapter(Duration).validate_python(text)
    except ValidationError as e:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 2160h, P90D)") from e


def _db_retention(args: argparse.Namespace) -> int:
    from pdscaler import wiring
    from pdscaler.store.retention import prune

    settings = _settings()
    age = args.older_than or settings.database.retention
    if age is None:
        print("no age: give --older-than or set PDSCALER_DATABASE__RETENTION", file=sys.stderr)
        return 2
    run = prune(wiring.build_database(settings), age, now=datetime.now(UTC),
                actor=f"{getpass.getuser()}@{socket.gethostname()}")  # fmt: skip
    print(f"deleted {run.deleted} decisions decided before {run.cutoff.isoformat()}")
    return 0


def _db_downgrade(args: argparse.Namespace) -> int:
    from pdscaler import wiring
    from pdscaler.store import migrate

    db = wiring.build_database(_settings())
    migrate.downgrade(db.engine, args.revision)
    print(f"schema at {migrate.current_revision(db.engine) or 'base'}")
    return 0


def _db_current(_args: argparse.Namespace) -> int:
    from pdscaler import wiring
    from pdscaler.store import migrate

    db = wiring.build_database(_settings())
    current, head = migrate.current_revision(db.engine), migrate.head_revision()
    print(f"{current or 'base'} (head is {head})")
    return 0 if current == head else 1


def _policy_validate(args: argparse.Namespace) -> int:
    from pdscaler.store.files import read_policies

    failed = 0
    for item in read_policies(args.file):
        if item.policy is not None:
            print(f"ok      {item.where}: {'/'.join(item.policy.key)}")
            continue
        failed += 1
        for error in item.errors:
            print(f"invalid {item.where}: {error.field or '(document)'}: {error.message}")
    return 1 if failed else 0


def _policy_apply(args: argparse.Namespace) -> int:
    from pdscaler.store.files import read_policies

    items = list(read_policies(args.file))
    invalid = [item for item in items if item.policy is None]
    for item in invalid:
        print(f"invalid {item.where}: {item.errors[0].field}: {item.errors[0].message}")
    if invalid:
        return 1  # nothing is applied unless every file is valid
    apply_one = _api_applier(args) if args.api else _db_applier(args)
    for item in items:
        assert item.policy is not None
        print(f"{'/'.join(item.policy.key)} {apply_one(item.policy)}")
    return 0


def _api_applier(args: argparse.Namespace) -> Callable[..., str]:
    from pdscaler.client import PdscalerClient

    client = PdscalerClient(args.api, args.token)
    return lambda policy: client.apply(policy, args.comment)


def _db_applier(args: argparse.Namespace) -> Callable[..., str]:
    from pdscaler import wiring
    from pdscaler.control.clock import SystemClock
    from pdscaler.domain.policy import Policy
    from pdscaler.store import migrate
    from pdscaler.store.policies import PolicyStore

    db = wiring.build_database(_settings())
    migrate.require_head(db.engine)
    store, clock = PolicyStore(db), SystemClock()
    author = os.environ.get("USER", "cli")

    def apply_one(policy: Policy) -> str:
        _, outcome = store.apply(policy, author=author, comment=args.comment, now=clock.now())
        return outcome.value

    return apply_one


def _decisions_tail(args: argparse.Namespace) -> int:
    from pdscaler.client import PdscalerClient

    client = PdscalerClient(args.api, args.token)
    where = {k: v for k, v in (("namespace", args.namespace), ("policy", args.policy)) if v}
    recent = client.decisions({**where, "limit": args.lines})["items"]
    for decision in reversed(recent):
        print(_decision_line(decision))
    # Follow by time: ask for everything since the newest decision printed, page by page,
    # and skip the ones already printed at that same instant.
    since = recent[0]["decidedAt"] if recent else None
    printed = {d["id"] for d in recent if d["decidedAt"] == since}
    while args.follow:
        time.sleep(args.interval)
        new = [d for d in _all_since(client, where, since) if d["id"] not in printed]
        for decision in reversed(new):
            print(_decision_line(decision), flush=True)
        if new:
            since = new[0]["decidedAt"]
            printed = {d["id"] for d in new if d["decidedAt"] == since}
    return 0


def _all_since(
    client: PdscalerClient, where: dict[str, str], since: str | None
) -> list[dict[str, Any]]:
    """Every decision at or after ``since``, newest first."""
    params: dict[str, Any] = {**where, "limit": 1000, **({"since": since} if since else {})}
    found: list[dict[str, Any]] = []
    while True:
        page = client.decisions(params)
        found += page["items"]
        if not page["nextCursor"]:
            return found
        params["cursor"] = page["nextCursor"]


def _decision_line(d: dict[str, Any]) -> str:
    steps = " > ".join(f"{s['name']}={s['value']}({s['reason']})" for s in d["steps"])
    policy = f"{d['policyNamespace']}/{d['policyName']}@v{d['policyVersion']}"
    return (
        f"{d['decidedAt']} #{d['id']} {policy} {d['role']}"
        f" {d['currentReplicas']}->{d['desiredReplicas']} {d['action']} {d['status']}"
        f" [{steps}]" + (f" error={d['error']}" if d.get("error") else "")
    )


def _bench(args: argparse.Namespace) -> int:
    from pdscaler.benchmark.plots import write_plots
    from pdscaler.benchmark.report import format_table
    from pdscaler.benchmark.suite import POLICIES, describe, prepare, result_json, run_trace
    from pdscaler.profiles import DEFAULT_PROFILE, load_profile
    from pdscaler.sim.cluster import SimConfig

    config = SimConfig(load_profile(DEFAULT_PROFILE))
    policies = args.policies or list(POLICIES)
    progress = _ProgressLine(sys.stderr)
    started = time.monotonic()
    results = []
    for path in args.traces:
        try:
            setup = prepare(path, config, minutes=args.minutes, rate=args.rate)
        except ValueError as e:  # a trace that cannot be read or cut: TraceError included
            progress.clear()
            print(f"pdscaler: {e}", file=sys.stderr)
            return 1
        result = run_trace(setup, policies, config, DEFAULT_PROFILE, progress)
        progress.clear()
        print(f"\n{describe(setup)}\n{format_table(result.metrics)}", flush=True)
        written = write_plots(result, args.out)
        results.append(result_json(result))
        print("plots: " + ", ".join(str(p) for p in written))
    elapsed = time.monotonic() - started
    report = {"profile": DEFAULT_PROFILE, "coldStartS": config.cold_start_s,
              "wallSeconds": elapsed, "traces": results}  # fmt: skip
    (args.out / "bench.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"\n{len(results)} trace(s) × {len(policies)} policies in {elapsed:.0f} s; "
          f"results in {args.out / 'bench.json'}")  # fmt: skip
    return 0


def _forecast_backtest(args: argparse.Namespace) -> int:
    from pdscaler.forecast.backtest import arrival_rate, backtest, format_table
    from pdscaler.sim.traces import load_trace, scale_rate, window

    if not 0.5 <= args.quantile < 1:
        print("pdscaler: --quantile must be in [0.5, 1)", file=sys.stderr)
        return 2
    trace = load_trace(args.trace)
    if args.minutes is not None:
        trace = window(trace, 0.0, args.minutes * 60)
    if args.rate is not None:
        trace = scale_rate(trace, args.rate)
    values = arrival_rate([r.arrival_s for r in trace], args.step)
    horizon_steps = max(1, round(args.horizon / args.step))
    warmup_steps = round(args.warmup * 60 / args.step)
    try:
        scores = backtest(values, step_s=args.step, horizon_steps=horizon_steps,
                          quantile=args.quantile, warmup_steps=warmup_steps)  # fmt: skip
    except ValueError as e:
        print(f"pdscaler: {args.trace}: {e}", file=sys.stderr)
        return 1
    print(f"{args.trace.name}: arrival rate in {len(values)} steps of {args.step:g} s, "
          f"forecast {horizon_steps * args.step:g} s ahead from {scores[0].origins} origins "
          f"after {args.warmup:g} min")  # fmt: skip
    print(format_table(scores, args.quantile))
    return 0


class _ProgressLine:
    """One line on a terminal, rewritten in place, once a run has lasted a few seconds
    (nothing when the stream is not a terminal: a log keeps no carriage returns)."""

    AFTER_S = 2.0
    EVERY_S = 0.5

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._started = time.monotonic()
        self._last = 0.0
        self._width = 0

    def __call__(self, trace: str, policy: str, t: float, end: float) -> None:
        now = time.monotonic()
        if now - self._started < self.AFTER_S or now - self._last < self.EVERY_S:
            return
        if not self._stream.isatty():
            return
        self._last = now
        line = f"{trace}: {policy}, {t / 60:.0f} of at most {end / 60:.0f} simulated minutes"
        self._stream.write("\r" + line.ljust(self._width))
        self._stream.flush()
        self._width = len(line)

    def clear(self) -> None:
        if self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()
            self._width = 0


def _token_new(args: argparse.Namespace) -> int:
    from pdscaler.api.auth import new_token

    token, digest = new_token()
    print(f"token (shown once): {token}")
    entry = {"name": args.name, "role": args.role, "sha256": digest}
    print(f"add to PDSCALER_API__TOKENS: {json.dumps(entry)}")
    return 0

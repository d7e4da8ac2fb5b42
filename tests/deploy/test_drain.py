"""The engine-side drain (deploy/examples/drain): the preStop script that keeps an engine
pod alive until it has no request in flight, and the LeaderWorkerSet hook that points it
at every pod of a group.

The script's decisions are tested with its clock and its scrape replaced; one run as a
program, against a local HTTP server, checks the real thing end to end."""

from __future__ import annotations

import http.server
import importlib.util
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.deploy.manifests import EXAMPLES, containers, pod_templates

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
DOWN = OSError("connection refused")


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configmap = yaml.safe_load((EXAMPLES / "drain" / "configmap.yaml").read_text())
    path = tmp_path_factory.mktemp("drain") / "drain.py"
    path.write_text(configmap["data"]["drain.py"])
    return path


@pytest.fixture(scope="module")
def drain(script: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("drain", script)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exposition(running: float, waiting: float = 0) -> str:
    return (
        f"# HELP {RUNNING} Number of requests in model execution batches.\n"
        f"# TYPE {RUNNING} gauge\n"
        f'{RUNNING}{{engine="0",model_name="m"}} {running}\n'
        f'{WAITING}{{engine="0",model_name="m"}} {waiting}\n'
        f"vllm:num_preemptions_total 7.0\n"
    )


def test_in_flight_adds_up_every_series_of_the_gauges(drain: ModuleType) -> None:
    text = (
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{engine="0",model_name="a b {c}"} 3.0\n'
        'vllm:num_requests_running{engine="1",model_name="a b {c}"} 2 1700000000000\n'
        "vllm:num_requests_waiting 1e0\n"
        "vllm:num_requests_running_total 100\n"
        'sglang:num_running_reqs{engine_type="decode"} 50\n'
    )

    assert drain.in_flight(text, {RUNNING, WAITING}) == 6.0
    assert drain.in_flight(text, {"sglang:num_running_reqs"}) == 50.0
    assert drain.in_flight("", {RUNNING}) == 0.0
    with pytest.raises(ValueError, match="NaN"):
        drain.in_flight(f"{RUNNING} NaN\n", {RUNNING})


@dataclass
class FakeTime:
    """Stands in for the script's ``time`` module: sleeping advances the clock."""

    now: float = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


Answer = float | tuple[float, float] | Exception


@dataclass
class Engines:
    """Scripted answers per URL, one per poll (running requests, or running and waiting,
    or a failure); the last one repeats."""

    answers: dict[str, list[Answer]]
    polls: dict[str, int] = field(default_factory=dict)

    def scrape(self, url: str, timeout_s: float) -> str:
        index = self.polls.get(url, 0)
        self.polls[url] = index + 1
        answer = self.answers[url][min(index, len(self.answers[url]) - 1)]
        if isinstance(answer, Exception):
            raise answer
        return exposition(*answer) if isinstance(answer, tuple) else exposition(answer)


@dataclass(frozen=True)
class Case:
    name: str
    answers: dict[str, list[Answer]]
    flags: list[str]
    message: str  # how the script's last line starts
    stops_at_s: float  # on the script's clock; polls every 2 s, lingers 5 s


CASES = [
    Case("idle-from-the-start", {"a": [0]}, [], "drain: idle for 5s after 6s", 6),
    Case("waits-for-running-requests", {"a": [3, 1, 0]}, [], "drain: idle for 5s after 10s", 10),
    Case("waits-for-waiting-requests", {"a": [(0, 2), (0, 1), (0, 0)]}, [], "drain: idle", 10),
    Case("a-new-request-restarts-the-linger", {"a": [0, 0, 2, 0]}, [], "drain: idle", 12),
    Case("gives-up-at-the-timeout", {"a": [1]}, ["--timeout=10"], "drain: gave up after 10s", 10),
    Case("an-engine-that-never-answers", {"a": [DOWN]}, [], "drain: no engine left", 4),
    Case("one-failed-poll-is-not-idle", {"a": [2, DOWN, 0]}, [], "drain: idle", 10),
    Case("waits-for-the-whole-group", {"a": [0], "b": [2, 2, 0]}, [], "drain: idle", 10),
    Case("a-gone-member-is-not-waited-for", {"a": [0], "b": [DOWN]}, [], "drain: idle", 10),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_drain(
    drain: ModuleType,
    case: Case,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock, engines = FakeTime(), Engines(case.answers)
    monkeypatch.setattr(drain, "time", clock)
    monkeypatch.setattr(drain, "scrape", engines.scrape)
    urls = [f"--url={url}" for url in case.answers]
    flags = [*urls, f"--gauge={RUNNING}", f"--gauge={WAITING}", "--linger=5", "--interval=2"]

    status = drain.main([*flags, *case.flags])

    assert status == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(case.message)
    assert clock.now == case.stops_at_s


class _Metrics(http.server.BaseHTTPRequestHandler):
    answers: list[float] = []
    polls = 0

    def do_GET(self) -> None:  # the BaseHTTPRequestHandler's naming
        cls = type(self)
        running = cls.answers[min(cls.polls, len(cls.answers) - 1)]
        cls.polls += 1
        body = exposition(running).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def engine() -> Iterator[tuple[str, type[_Metrics]]]:
    handler = type("Metrics", (_Metrics,), {"answers": [2, 0], "polls": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics", handler
    finally:
        server.shutdown()
        server.server_close()


def test_the_script_drains_a_real_endpoint(
    script: Path, engine: tuple[str, type[_Metrics]]
) -> None:
    url, handler = engine
    flags = [f"--url={url}", f"--gauge={RUNNING}", "--linger=0.1", "--interval=0.05"]

    done = subprocess.run(
        [sys.executable, str(script), *flags, "--timeout=30"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("drain: idle for 0.1s")
    assert handler.polls >= 2


def test_the_leader_worker_set_hook_polls_every_pod_of_the_group(tmp_path: Path) -> None:
    """The hook builds one --url per pod of the group: the leader's address, and each
    worker's, which is the leader's name with -<index> in the same DNS domain."""
    lws = yaml.safe_load((EXAMPLES / "vllm-lws" / "decode.yaml").read_text())
    ((_, template),) = pod_templates(lws)
    (container,) = containers(template)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    fake = tmp_path / "python3"  # prints the drain script's arguments instead
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    environment = {
        "PATH": f"{tmp_path}:/usr/bin:/bin",
        "LWS_LEADER_ADDRESS": "deepseek-r1-decode-0.deepseek-r1-decode.inference",
        "LWS_GROUP_SIZE": "3",
    }

    done = subprocess.run(command, env=environment, capture_output=True, text=True, check=True)

    arguments = done.stdout.splitlines()
    assert command[:2] == ["sh", "-c"]
    assert [a for a in arguments if a.startswith("--url=")] == [
        "--url=http://deepseek-r1-decode-0.deepseek-r1-decode.inference:8000/metrics",
        "--url=http://deepseek-r1-decode-0-1.deepseek-r1-decode.inference:8000/metrics",
        "--url=http://deepseek-r1-decode-0-2.deepseek-r1-decode.inference:8000/metrics",
    ]
    assert arguments[0] == "/etc/engine-drain/drain.py"
    assert f"--gauge={RUNNING}" in arguments

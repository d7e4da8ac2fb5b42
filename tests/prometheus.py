"""A real Prometheus server (Debian's /usr/bin/prometheus) for integration tests.

It scrapes the given targets every second with `honor_labels: true`, so the `namespace` and
`pod` labels that a fake exporter puts on its series are kept as Kubernetes service
discovery would set them. Data lives in a directory the caller owns; `restart()` reuses it
and the port, as a real Prometheus comes back after a crash.

Waiting here polls with a deadline: it is readiness, not a timing assertion.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx
import yaml

SCRAPE_INTERVAL = "1s"
# Staleness markers take a vanished series out of instant queries at the next scrape. A
# series that got no marker (one from before a crash or restart: a killed Prometheus writes
# none) stays visible for the lookback delta, 5 min by default; 30 s keeps such tests short.
LOOKBACK_DELTA = "30s"
POLL_INTERVAL_S = 0.1
STOP_TIMEOUT_S = 10.0

QueryResult = list[dict[str, Any]]


class PrometheusNotInstalled(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusServer:
    """One Prometheus process on 127.0.0.1, started and stopped by the test session."""

    def __init__(self, *, targets: Sequence[str], data_dir: Path, job: str = "fleet") -> None:
        self.targets = list(targets)
        self.data_dir = data_dir
        self.job = job
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("Prometheus was never started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "prometheus.log"

    def start(self) -> None:
        """Start the process (on the port of the first start, if any); does not wait."""
        if self.is_running:
            return
        binary = shutil.which("prometheus")
        if binary is None:
            raise PrometheusNotInstalled(
                "the prometheus binary is not on PATH; run `make test`, which installs "
                "Debian's prometheus package (.ci/services)"
            )
        if self._port is None:
            self._port = free_port()
        tsdb = self.data_dir / "tsdb"
        tsdb.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self._config()))
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [
                binary,
                f"--web.listen-address=127.0.0.1:{self._port}",
                f"--storage.tsdb.path={tsdb}",
                f"--config.file={config}",
                f"--query.lookback-delta={LOOKBACK_DELTA}",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        """Terminate, kill after a timeout, and reap. Safe to call when not running."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            self._process = None
        self._close_log()

    def kill(self) -> None:
        """SIGKILL and reap, as a crash: no clean TSDB shutdown, no staleness markers."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.send_signal(signal.SIGKILL)
            self._process.wait()
            self._process = None
        self._close_log()

    def restart(self) -> None:
        """Stop if running, start on the same port and data directory, wait for scrapes."""
        self.stop()
        self.start()
        self.wait_ready()
        self.wait_scraping()

    def __enter__(self) -> PrometheusServer:
        self.start()
        self.wait_ready()
        self.wait_scraping()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Poll /-/ready until it answers 200; fail early if the process exits."""
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while True:
                if not self.is_running:
                    raise RuntimeError(f"Prometheus exited during start-up:\n{self._log_tail()}")
                try:
                    if client.get("/-/ready").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"Prometheus not ready after {timeout_s}s:\n{self._log_tail()}"
                    )
                time.sleep(POLL_INTERVAL_S)

    def wait_scraping(self, timeout_s: float = 20.0) -> None:
        """Wait until every target has been scraped successfully.

        Prometheus hands new targets to its scrapers at most every 5 s, so the first scrape
        comes up to 5 s after start-up.
        """
        self.wait_for(
            f'up{{job="{self.job}"}} == 1',
            lambda r: len(r) == len(self.targets),
            timeout_s=timeout_s,
        )

    def wait_for_scrape(self, timeout_s: float = 20.0) -> None:
        """Wait until every target has been scraped after this call began.

        The series then reflect everything a test set before the call; use it before code
        that reads Prometheus once (and caches) rather than polling.
        """
        called_at = time.time()  # scrape timestamps are wall-clock seconds
        self.wait_for(
            # timestamp() of a bare selector gives the sample's time; of an expression,
            # Prometheus 2.42 gives the evaluation time, hence `and` rather than `== 1`.
            f'timestamp(up{{job="{self.job}"}}) and up{{job="{self.job}"}} == 1',
            lambda r: (
                len(r) == len(self.targets) and all(float(s["value"][1]) >= called_at for s in r)
            ),
            timeout_s=timeout_s,
        )

    def query(self, promql: str) -> QueryResult:
        """One instant query; returns `data.result` (a vector's samples)."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5.0)
        response.raise_for_status()
        result: QueryResult = response.json()["data"]["result"]
        return result

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[QueryResult], bool],
        timeout_s: float = 20.0,
    ) -> QueryResult:
        """Poll an instant query until `predicate(result)` holds; returns that result.

        Transport errors and 503s count as "not yet" (Prometheus may be restarting); a query
        Prometheus rejects (HTTP 400 or 422) fails at once.
        """
        deadline = time.monotonic() + timeout_s
        last: QueryResult | None = None
        last_error: str | None = None
        while True:
            try:
                last = self.query(promql)
                last_error = None
                if predicate(last):
                    return last
            except httpx.TransportError as e:
                last_error = repr(e)
            except httpx.HTTPStatusError as e:
                if e.response.status_code in (400, 422):
                    raise ValueError(f"bad query {promql!r}: {e.response.text}") from e
                last_error = f"HTTP {e.response.status_code}: {e.response.text}"
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{promql!r} did not satisfy the predicate within {timeout_s}s; "
                    f"last result: {last!r}; last error: {last_error}"
                )
            time.sleep(POLL_INTERVAL_S)

    def _config(self) -> dict[str, Any]:
        return {
            "global": {
                "scrape_interval": SCRAPE_INTERVAL,
                "scrape_timeout": SCRAPE_INTERVAL,
                "evaluation_interval": SCRAPE_INTERVAL,
            },
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "honor_labels": True,
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

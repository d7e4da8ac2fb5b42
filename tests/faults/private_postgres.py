"""A Postgres cluster of a test's own: made with ``initdb`` in a temporary directory,
served on a free port of 127.0.0.1 with trust authentication, stopped and started at will.

Fault tests stop and kill this server, never the shared one the other tests use. Run as
root, the server's programs run as the ``postgres`` user (``initdb`` refuses root), and
the directory belongs to that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg

READY_TIMEOUT_S = 30.0
START_ATTEMPTS = 3
SERVER_USER = "postgres"

# Settings for a throw-away cluster: local only, few resources. A commit still writes its
# WAL before it returns (synchronous_commit stays on), so a killed server loses nothing
# committed; only the flush to disk is skipped, which matters for a machine's crash alone.
CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockets}'
fsync = off
max_connections = 40
shared_buffers = 16MB
"""


class Missing(Exception):
    """What a private cluster needs is not on this machine; the message says what."""


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise Missing(f"`{name}` is not on PATH: a private Postgres cluster cannot be made")
    return found


def _as_server_user() -> list[str]:
    """The prefix that runs a command as the server's user: none unless run as root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise Missing(f"running as root, and no `{SERVER_USER}` user to run Postgres as") from None
    return [_binary("runuser"), "-u", SERVER_USER, "--"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivatePostgres:
    """One cluster. :meth:`create` makes and starts it; :meth:`destroy` ends it for good."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.data = root / "data"
        self._log = root / "server.log"
        self._as_user = _as_server_user()
        self._initdb = _binary("initdb")
        self._pg_ctl = _binary("pg_ctl")

    @classmethod
    def create(cls) -> PrivatePostgres:
        """A new cluster in a new temporary directory, on a free port, started."""
        root = Path(tempfile.mkdtemp(prefix="pdscaler-pg-"))
        try:
            cluster = cls(root, free_port())
            cluster._init()
            for attempt in range(START_ATTEMPTS):
                try:
                    cluster.start()
                    break
                except RuntimeError:  # the port was taken since it was found free
                    if attempt == START_ATTEMPTS - 1:
                        raise
                    cluster._move_to(free_port())
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return cluster

    def _init(self) -> None:
        if self._as_user:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run([self._initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust",
                   "-E", "UTF8", "--no-sync", "--no-instructions"])  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(CONF.format(port=self.port, sockets=self.root))

    def _move_to(self, port: int) -> None:
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {port}\n")  # the last setting of a name wins
        self.port = port

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._run([self._pg_ctl, "start", "-D", str(self.data), "-l", str(self._log),
                   "-w", "-t", str(int(READY_TIMEOUT_S))])  # fmt: skip
        self._wait_ready()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clients cut off, a clean shutdown) or ``immediate``
        (every process killed at once, as in a crash: recovery runs at the next start)."""
        self._run([self._pg_ctl, "stop", "-D", str(self.data), "-m", mode, "-w"])

    def running(self) -> bool:
        status = subprocess.run(
            [*self._as_user, self._pg_ctl, "status", "-D", str(self.data)],
            capture_output=True, text=True, check=False, cwd=self.root,
        )  # fmt: skip
        return status.returncode == 0

    def create_database(self, name: str) -> str:
        """Create database ``name``; returns its URL."""
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        """Stop the server if it runs and remove its directory."""
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database} connect_timeout=2"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                with psycopg.connect(self._dsn("postgres")) as connection:
                    connection.execute("SELECT 1")
                return
            except psycopg.OperationalError as e:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the private Postgres did not become ready: {e}") from e
            time.sleep(0.05)

    def _run(self, command: Sequence[str]) -> None:
        done = subprocess.run(
            [*self._as_user, *command], capture_output=True, text=True, check=False,
            cwd=self.root, timeout=READY_TIMEOUT_S + 30,
        )  # fmt: skip
        if done.returncode != 0:
            log = self._log.read_text(errors="replace")[-2000:] if self._log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}\n{log}"
            )

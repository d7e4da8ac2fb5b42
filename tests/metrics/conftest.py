"""A real Prometheus scraping a fake engine fleet, shared by the metrics tests.

Both live for the whole session (starting Prometheus takes about a second). Tests stay
apart by namespace: each takes a fresh one from `namespace`, and its pods leave the fleet
when the test ends.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator

import pytest

from tests.fleet import FakeFleet
from tests.prometheus import PrometheusServer


@pytest.fixture(scope="session")
def fleet() -> Iterator[FakeFleet]:
    fake = FakeFleet()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="session")
def prometheus(
    fleet: FakeFleet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    data_dir = tmp_path_factory.mktemp("prometheus")
    server = PrometheusServer(targets=[fleet.target], data_dir=data_dir)
    try:
        server.start()
        server.wait_ready()
        server.wait_scraping()
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def live_prometheus(prometheus: PrometheusServer) -> PrometheusServer:
    """The session's Prometheus, restarted first if an earlier test killed it."""
    if not prometheus.is_running:
        prometheus.restart()
    return prometheus


@pytest.fixture
def namespace(fleet: FakeFleet) -> Iterator[str]:
    """A namespace of this test's own; its pods are removed from the fleet afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    yield name
    fleet.clear(name)

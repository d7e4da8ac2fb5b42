"""Build the Prometheus client from Settings: auth, TLS, timeouts, retries with backoff."""

from __future__ import annotations

import requests
from prometheus_api_client import PrometheusConnect
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from pdscaler.config import PrometheusSettings
from pdscaler.metrics.prometheus import PrometheusSource, SourceConfig


def connect(settings: PrometheusSettings) -> PrometheusConnect:
    session = requests.Session()
    retry = Retry(
        total=settings.retries,
        backoff_factor=0.2,
        status_forcelist=(502, 503, 504),
        allowed_methods=frozenset({"GET", "POST"}),
        raise_on_status=False,
    )
    if settings.ca_file is not None:
        session.verify = str(settings.ca_file)
    if settings.insecure_skip_verify:
        session.verify = False
    headers = {}
    if settings.bearer_token is not None:
        headers["Authorization"] = f"Bearer {settings.bearer_token.get_secret_value()}"
    auth = None
    if settings.username is not None:
        password = settings.password.get_secret_value() if settings.password else ""
        auth = (settings.username, password)
    url = str(settings.url).rstrip("/")
    client = PrometheusConnect(
        url=url, headers=headers, retry=retry, auth=auth, session=session,
        timeout=settings.timeout.total_seconds(),
    )  # fmt: skip
    # Room for the concurrent queries of one tick (the client mounts a one-slot default).
    session.mount(url, HTTPAdapter(max_retries=retry, pool_maxsize=settings.concurrency))
    return client


def prometheus_source(settings: PrometheusSettings) -> PrometheusSource:
    config = SourceConfig(
        rate_window_s=int(settings.rate_window.total_seconds()),
        stale_after_s=settings.stale_after_s,
        timeout_s=settings.timeout.total_seconds(),
        concurrency=settings.concurrency,
    )
    return PrometheusSource(connect(settings), config)

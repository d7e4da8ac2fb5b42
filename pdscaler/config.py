"""The one Settings object.

Every setting is read from the environment with the ``PDSCALER_`` prefix; nested groups use
``__`` as the delimiter, so ``database.url`` is ``PDSCALER_DATABASE__URL``. Settings are
validated once, at start-up: :func:`load_settings` turns a validation failure into a
:class:`SettingsError` whose message names each offending environment variable.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import secrets
import socket
import typing
from collections.abc import Mapping
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

ENV_PREFIX = "PDSCALER_"
ENV_NESTED_DELIMITER = "__"


_GO_DURATION = re.compile(
    r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?"
    r"(?:(\d+(?:\.\d+)?)ms)?$"
)


def parse_duration(value: object) -> object:
    """Seconds as a number, or a Go-style duration ("90s", "5m", "1h30m", "250ms").

    Anything else (ISO 8601 "PT30S", a timedelta) is left for pydantic to parse.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return timedelta(seconds=float(text))
        match = _GO_DURATION.match(text)
        if text and match:
            h, m, s, ms = (float(g) if g else 0.0 for g in match.groups())
            return timedelta(hours=h, minutes=m, seconds=s, milliseconds=ms)
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class Role(StrEnum):
    """API roles, each including the rights of the ones before it."""

    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _ROLE_RANK[self]

    def allows(self, required: Role) -> bool:
        return self.rank >= required.rank


_ROLE_RANK = {Role.VIEWER: 0, Role.EDITOR: 1, Role.ADMIN: 2}


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Group):
    url: str = Field(
        default="",
        description="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db. "
        "Empty means an SQLite file in the data directory.",
    )
    pool_size: Annotated[int, Field(ge=1, le=200)] = Field(
        default=5, description="Connections kept open in the pool (Postgres only)."
    )
    connect_timeout: Duration = Field(
        default=timedelta(seconds=5), description="Time allowed to open one connection."
    )
    echo: bool = Field(default=False, description="Log every SQL statement.")
    retention: Duration | None = Field(
        default=None,
        description="How long `pdscaler db retention` keeps decisions (at least 1 day); "
        "unset: it needs --older-than.",
    )

    @field_validator("url")
    @classmethod
    def _known_dialect(cls, url: str) -> str:
        if url and not url.startswith(("postgresql", "sqlite")):
            raise ValueError("must be a postgresql:// or sqlite:// URL")
        return url


class PrometheusSettings(_Group):
    url: AnyHttpUrl = Field(
        default=AnyHttpUrl("http://127.0.0.1:9090"),
        description="Base URL of the Prometheus-compatible query API (Thanos, Mimir, "
        "VictoriaMetrics: the URL under which /api/v1/query answers).",
    )
    timeout: Duration = Field(default=timedelta(seconds=5), description="Timeout of one query.")
    bearer_token: SecretStr | None = Field(default=None, description="Sent as a bearer token.")
    username: str | None = Field(default=None, description="Basic auth user.")
    password: SecretStr | None = Field(default=None, description="Basic auth password.")
    ca_file: Path | None = Field(default=None, description="CA bundle for a private CA.")
    insecure_skip_verify: bool = Field(default=False, description="Do not verify TLS (tests).")
    retries: Annotated[int, Field(ge=0, le=10)] = Field(
        default=2, description="Retries of a failed connection or 5xx, with backoff."
    )
    scrape_interval: Duration = Field(
        default=timedelta(seconds=15), description="How often Prometheus scrapes the engines."
    )
    stale_after: Duration | None = Field(
        default=None,
        description="A sample older than this is stale (default: 2 x scrape_interval).",
    )
    rate_window: Duration = Field(
        default=timedelta(minutes=1), description="Window of rate() and histogram quantiles."
    )
    concurrency: Annotated[int, Field(ge=1, le=32)] = Field(
        default=4, description="Queries sent at the same time."
    )

    @property
    def stale_after_s(self) -> float:
        return (self.stale_after or 2 * self.scrape_interval).total_seconds()


class KubernetesSettings(_Group):
    kubeconfig: Path | None = Field(
        default=None,
        description="Path of a kubeconfig file; unset means in-cluster configuration.",
    )
    context: str | None = Field(
        default=None, description="Context of the kubeconfig to use (default: its current)."
    )
    host: str | None = Field(
        default=None,
        description="API server URL; with token_file and ca_file, used instead of a "
        "kubeconfig or the in-cluster configuration.",
    )
    token_file: Path | None = Field(default=None, description="Bearer token file (with host).")
    ca_file: Path | None = Field(default=None, description="PEM CA bundle (with host).")
    request_timeout: Duration = Field(
        default=timedelta(seconds=10), description="Timeout of one API server call."
    )
    qps: Annotated[float, Field(gt=0, le=10_000)] = Field(
        default=50.0, description="Client-side rate limit: requests a second to the API server."
    )
    burst: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=100, description="Requests allowed at once above the QPS rate."
    )
    leader_election: bool = Field(
        default=True,
        description="Elect one leader among the replicas with a Lease; only it acts.",
    )
    lease_name: str = Field(default="pdscaler-leader", description="Leader election lease.")
    lease_namespace: str = Field(default="pdscaler", description="Namespace of the lease.")
    lease_duration: Duration = Field(
        default=timedelta(seconds=15),
        description="How long a lease holds without renewal before another replica takes it.",
    )
    renew_deadline: Duration = Field(
        default=timedelta(seconds=10),
        description="The leader steps down when it could not renew for this long.",
    )
    retry_period: Duration = Field(
        default=timedelta(seconds=2), description="How often every replica tries the lease."
    )
    unschedulable_after: Duration = Field(
        default=timedelta(minutes=2),
        description="A pod the scheduler could not place for this long is reported, and "
        "holds its pool's scale-up.",
    )

    @model_validator(mode="after")
    def _sane_lease(self) -> KubernetesSettings:
        if self.retry_period < timedelta(milliseconds=100):
            raise ValueError("retry_period must be at least 100ms")
        if not self.lease_duration > self.renew_deadline > self.retry_period:
            raise ValueError(
                "lease_duration must exceed renew_deadline, which must exceed retry_period "
                f"(got {self.lease_duration.total_seconds():g}s, "
                f"{self.renew_deadline.total_seconds():g}s, {self.retry_period.total_seconds():g}s)"
            )
        if self.host is not None and self.kubeconfig is not None:
            raise ValueError("set host (with token_file and ca_file) or kubeconfig, not both")
        return self


class LoopSettings(_Group):
    enabled: bool = Field(
        default=False,
        description="Run the control loop in this process (needs a metrics source and an "
        "actuator).",
    )
    interval: Duration = Field(default=timedelta(seconds=5), description="Time between two ticks.")
    max_sample_age: Duration = Field(
        default=timedelta(seconds=60),
        description="A sample older than this is stale and never used to scale (1 s to 1 h).",
    )
    identity: str = Field(
        default_factory=lambda: os.environ.get("HOSTNAME") or socket.gethostname(),
        description="This replica's name in the audit log (the pod name in a cluster).",
    )
    namespaces: list[Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]] = (
        Field(
            default_factory=list,
            description="Only the policies of these namespaces are run by the loop (empty: all).",
        )
    )

    @field_validator("interval")
    @classmethod
    def _sane_interval(cls, interval: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= interval <= timedelta(minutes=10):
            raise ValueError("must be between 1 second and 10 minutes")
        return interval

    @field_validator("max_sample_age")
    @classmethod
    def _sane_age(cls, age: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= age <= timedelta(hours=1):
            raise ValueError("must be between 1 second and 1 hour")
        return age


class ApiToken(_Group):
    """One bearer token. Only its SHA-256 digest is configured, never the token itself."""

    name: Annotated[str, Field(min_length=1, max_length=128)] = Field(
        description="Who holds the token; recorded as the author of policy changes."
    )
    role: Role = Field(description="viewer, editor or admin.")
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] = Field(
        description="Hex SHA-256 digest of the token (see `pdscaler token new`)."
    )


class ApiSettings(_Group):
    host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(default=8080, description="API port.")
    tokens: list[ApiToken] = Field(
        default_factory=list, description="Bearer tokens, as a JSON list of objects."
    )
    anonymous_reads: bool = Field(
        default=False, description="Allow read-only routes without a token."
    )
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = Field(
        default=1024 * 1024, description="Larger request bodies get 413."
    )
    cursor_secret: SecretStr = Field(
        default_factory=lambda: SecretStr(secrets.token_hex(32)),
        description="Key that signs pagination cursors; set it when running several replicas.",
    )
    public_url: AnyHttpUrl | None = Field(
        default=None, description="URL under which users reach the API (used in links)."
    )


class GrafanaSettings(_Group):
    url: AnyHttpUrl | None = Field(default=None, description="Grafana base URL, for links.")
    api_token: SecretStr | None = Field(default=None, description="Token for annotations.")
    dashboard_uid: str = Field(
        default="pdscaler",
        pattern=r"^[A-Za-z0-9_-]{1,40}$",
        description="UID of the dashboard (the generated one's is pdscaler).",
    )
    link_window: Duration = Field(
        default=timedelta(minutes=15),
        description="A decision's dashboard link shows this long before and after it.",
    )
    annotations: bool = Field(
        default=False,
        description="Push each applied scale change to Grafana's annotations API; needs url "
        "and api_token.",
    )

    @field_validator("link_window")
    @classmethod
    def _sane_window(cls, window: timedelta) -> timedelta:
        if not timedelta(seconds=10) <= window <= timedelta(days=7):
            raise ValueError("must be between 10 seconds and 7 days")
        return window

    @model_validator(mode="after")
    def _annotations_need_grafana(self) -> GrafanaSettings:
        if not self.annotations:
            return self
        prefix = f"{ENV_PREFIX}GRAFANA{ENV_NESTED_DELIMITER}"
        missing = [
            f"{prefix}{name.upper()}"
            for name, unset in (
                ("url", self.url is None),
                ("api_token", self.api_token is None or not self.api_token.get_secret_value()),
            )
            if unset
        ]
        if missing:
            verb = "is" if len(missing) == 1 else "are"
            raise ValueError(
                f"{prefix}ANNOTATIONS is on but {' and '.join(missing)} {verb} not set"
            )
        return self


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class LogFormat(StrEnum):
    TEXT = "text"  # one line a record: time, level, logger, message
    JSON = "json"  # one JSON object a line, with the correlation fields


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


class Settings(BaseSettings):
    """All of pdscaler's configuration, grouped by the system each group talks to."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        frozen=True,
    )

    data_dir: Path = Field(
        default=Path("data"), description="Directory for the embedded SQLite database."
    )
    log_level: Annotated[LogLevel, BeforeValidator(_upper)] = Field(
        default=LogLevel.INFO, description="Root log level: DEBUG, INFO, WARNING or ERROR."
    )
    log_format: Annotated[LogFormat, BeforeValidator(_lower)] = Field(
        default=LogFormat.TEXT,
        description="text, or json: one JSON object a line, with tick, policy and role.",
    )
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    loop: LoopSettings = Field(default_factory=LoopSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    grafana: GrafanaSettings = Field(default_factory=GrafanaSettings)

    @property
    def database_url(self) -> str:
        """The configured database URL, or the embedded SQLite file in the data directory."""
        if self.database.url:
            return self.database.url
        return f"sqlite:///{(self.data_dir / 'pdscaler.db').resolve()}"


class SettingsError(Exception):
    """Configuration that cannot be used; the message names each environment variable."""


def env_var_name(loc: tuple[str | int, ...]) -> str:
    """The environment variable behind a validation error location."""
    parts = [str(p).upper() for p in loc if not isinstance(p, int)]
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(parts[:2]) if parts else ENV_PREFIX


# Variables with the prefix that are not settings: the CLI's token, and the test suites'.
NOT_SETTINGS = ("PDSCALER_TOKEN", "PDSCALER_TEST_", "PDSCALER_E2E_")


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Read and validate the settings, or raise :class:`SettingsError` naming the variables.

    A variable with the prefix that names no setting is an error too, so that a typo does
    not silently leave a default in place.
    """
    unknown = _unknown_variables(os.environ if environ is None else environ)
    if unknown:
        raise SettingsError("invalid settings:\n  " + "\n  ".join(unknown))
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except PydanticSettingsError as e:
        # Raised when a list or object setting is not valid JSON; it names only the group.
        culprits = _invalid_json(os.environ if environ is None else environ)
        names = ", ".join(culprits) or "a list or object setting"
        raise SettingsError(f"invalid settings:\n  {names}: not valid JSON ({e.__cause__})") from e
    except ValidationError as e:
        lines = [
            f"{env_var_name(err['loc'])}: {err['msg']}"
            + (f" (at {'.'.join(map(str, err['loc'][2:]))})" if len(err["loc"]) > 2 else "")
            for err in e.errors()
        ]
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from e


def _variables() -> dict[str, type[BaseModel] | None]:
    """Every settings variable, each with its group's model (None for a top-level one)."""
    found: dict[str, type[BaseModel] | None] = {}
    for name, field in Settings.model_fields.items():
        group = field.annotation
        if isinstance(group, type) and issubclass(group, _Group):
            for member in group.model_fields:
                found[f"{ENV_PREFIX}{name}{ENV_NESTED_DELIMITER}{member}".upper()] = group
        found[f"{ENV_PREFIX}{name}".upper()] = None
    return found


def _invalid_json(environ: Mapping[str, str]) -> list[str]:
    culprits = []
    for variable, group in _variables().items():
        if group is None or variable not in environ:
            continue
        member = variable.split(ENV_NESTED_DELIMITER, 1)[1].lower()
        if typing.get_origin(group.model_fields[member].annotation) in (list, dict):
            try:
                json.loads(environ[variable])
            except ValueError:
                culprits.append(variable)
    return culprits


def _unknown_variables(environ: Mapping[str, str]) -> list[str]:
    variables = _variables()
    known_top = {v for v, group in variables.items() if group is None}
    problems = []
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or variable.startswith(NOT_SETTINGS):
            continue
        top = variable.split(ENV_NESTED_DELIMITER, 1)[0]
        if top not in known_top or (ENV_NESTED_DELIMITER in variable and variable not in variables):
            close = difflib.get_close_matches(variable, list(variables), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{variable}: not a pdscaler setting{hint}")
    return problems

"""The one place that builds clients, stores, the control loop and the app from Settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from fastapi import FastAPI

from pdscaler.actuator.connect import kubernetes_actuator, kubernetes_transport, lease_elector
from pdscaler.api.app import create_app
from pdscaler.api.auth import TokenRegistry
from pdscaler.api.context import Services
from pdscaler.api.cursor import CursorCodec
from pdscaler.config import Settings
from pdscaler.control.annotate import AnnotateScaleChanges
from pdscaler.control.clock import SystemClock
from pdscaler.control.controller import Controller, ControllerConfig
from pdscaler.control.ports import Actuator, Leadership, MetricsSource, TickObserver
from pdscaler.control.scheduler import Loop
from pdscaler.domain.clock import Clock
from pdscaler.domain.errors import FieldError
from pdscaler.domain.policy import EnginePreset, Policy, Role
from pdscaler.domain.profile import PerfProfile
from pdscaler.forecast.baselines import LastValue
from pdscaler.forecast.registry import forecaster_for
from pdscaler.grafana.annotations import AnnotationPoster
from pdscaler.grafana.links import DashboardLinks
from pdscaler.logs import RedactSecrets, secrets_of
from pdscaler.metrics.connect import prometheus_source
from pdscaler.metrics.prometheus import PrometheusSource
from pdscaler.profiles import DEFAULT_PROFILE, ProfileError, load_profile
from pdscaler.store import migrate
from pdscaler.store.db import Database, create_db_engine
from pdscaler.store.decisions import DecisionStore
from pdscaler.store.forecasts import ForecastModelStore
from pdscaler.store.policies import PolicyStore
from pdscaler.telemetry import Telemetry


@dataclass(frozen=True)
class Backends:
    """The outside systems the control loop reads from and writes to."""

    metrics: MetricsSource
    actuator: Actuator
    leadership: Leadership | None = None  # None: this process acts alone


@dataclass(frozen=True)
class Runtime:
    app: FastAPI
    loop: Loop | None


def build_database(settings: Settings) -> Database:
    if not settings.database.url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Database(
        create_db_engine(
            settings.database_url,
            pool_size=settings.database.pool_size,
            connect_timeout=settings.database.connect_timeout,
            echo=settings.database.echo,
        )
    )


def build_backends(settings: Settings, clock: Clock) -> Backends:
    """Prometheus for signals, the Kubernetes API server for /scale and the leader lease."""
    transport = kubernetes_transport(settings.kubernetes)
    leadership = None
    if settings.kubernetes.leader_election:
        leadership = lease_elector(settings.kubernetes, transport, settings.loop.identity, clock)
    return Backends(
        metrics=prometheus_source(settings.prometheus),
        actuator=kubernetes_actuator(settings.kubernetes, transport, clock),
        leadership=leadership,
    )


def build_controller(
    settings: Settings,
    policies: PolicyStore,
    decisions: DecisionStore,
    clock: Clock,
    backends: Backends,
    forecast_models: ForecastModelStore | None = None,
    observers: Sequence[TickObserver] = (),
) -> Controller:
    config = ControllerConfig(
        interval=settings.loop.interval,
        max_sample_age_s=settings.loop.max_sample_age.total_seconds(),
        identity=settings.loop.identity,
        namespaces=frozenset(settings.loop.namespaces),
        profile_for=_profile,
        redact=RedactSecrets(secrets_of(settings)).redact,
        forecaster_for=lambda spec: forecaster_for(
            spec.model,
            quantile=spec.quantile,
            step_s=settings.loop.interval.total_seconds(),
            upper=True,
        ),
    )
    return Controller(
        policies=policies,
        decisions=decisions,
        metrics=backends.metrics,
        actuator=backends.actuator,
        forecaster=LastValue(),
        clock=clock,
        config=config,
        leadership=backends.leadership,
        # forecasts train on the metrics history where the source keeps one (Prometheus)
        history_source=backends.metrics if isinstance(backends.metrics, PrometheusSource) else None,
        forecast_models=forecast_models,
        observers=observers,
    )


def build_runtime(
    settings: Settings,
    db: Database,
    clock: Clock | None = None,
    backends: Backends | None = None,
    *,
    pace: float = 1.0,
) -> Runtime:
    """The API, and the control loop when enabled. Raises SchemaOutOfDate unless at head."""
    migrate.require_head(db.engine)
    clock = clock or SystemClock()
    policies, decisions = PolicyStore(db), DecisionStore(db)
    telemetry = Telemetry()
    loop = None
    source = None
    if settings.loop.enabled:
        backends = backends or build_backends(settings, clock)
        observers: list[TickObserver] = [telemetry]
        workers = []
        poster = _annotation_poster(settings, telemetry)
        if poster is not None:
            observers.append(AnnotateScaleChanges(
                poster, decisions, dashboard_uid=settings.grafana.dashboard_uid,
                api_url=str(settings.api.public_url) if settings.api.public_url else None,
            ))  # fmt: skip
            workers.append(poster)
        controller = build_controller(
            settings, policies, decisions, clock, backends, ForecastModelStore(db), observers
        )
        loop = Loop(
            controller,
            settings.loop.interval,
            clock,
            backends.leadership,
            lease_every=settings.kubernetes.retry_period,
            pace=pace,
            workers=workers,
        )
        # Readiness reports what the loop's own source has found out about metric names.
        if isinstance(backends.metrics, PrometheusSource):
            source = backends.metrics
        telemetry.leader(lambda: loop is not None and loop.leading)
    services = build_services(settings, db, clock, policies, decisions, loop, source, telemetry)
    return Runtime(create_app(services, max_body_bytes=settings.api.max_body_bytes), loop)


def build_app(settings: Settings, db: Database, clock: Clock | None = None) -> FastAPI:
    return build_runtime(settings, db, clock).app


def build_services(
    settings: Settings,
    db: Database,
    clock: Clock | None = None,
    policies: PolicyStore | None = None,
    decisions: DecisionStore | None = None,
    loop: Loop | None = None,
    source: PrometheusSource | None = None,
    telemetry: Telemetry | None = None,
) -> Services:
    def check_schema() -> str:
        db.ping()
        migrate.require_head(db.engine)
        return migrate.head_revision()

    def loop_problem() -> str | None:
        if loop is None:
            return None
        health = loop.health()
        return None if health.healthy else health.message

    checker = source or prometheus_source(settings.prometheus)
    policies = policies or PolicyStore(db)

    def warnings() -> list[str]:
        found = []
        if loop is not None and not loop.leading:  # a standby: say who leads
            found.append(f"control loop: {loop.health().message}")
        if source is None:
            return found
        engines = {p.policy.spec.engine.value for p in policies.all()} - {"custom"}
        return found + (source.problems(engines) if engines else [])

    def policy_warnings(policy: Policy) -> list[str]:
        engine = policy.spec.engine.value
        return [] if source is None or engine == "custom" else source.problems([engine])

    def check_policy(policy: Policy) -> list[FieldError]:
        errors = _profile_errors(policy)
        if policy.spec.engine is EnginePreset.CUSTOM:
            errors += checker.check_queries(policy)
        return errors

    return Services(
        db=db,
        policies=policies,
        decisions=decisions or DecisionStore(db),
        tokens=TokenRegistry(settings.api.tokens, anonymous_reads=settings.api.anonymous_reads),
        cursors=CursorCodec(settings.api.cursor_secret.get_secret_value().encode()),
        clock=clock or SystemClock(),
        check_schema=check_schema,
        loop_problem=loop_problem,
        check_policy=check_policy,
        readiness_warnings=warnings,
        policy_warnings=policy_warnings,
        forecast_models=ForecastModelStore(db),
        telemetry=telemetry or Telemetry(),
        dashboard_links=_dashboard_links(settings),
    )


def _annotation_poster(settings: Settings, telemetry: Telemetry) -> AnnotationPoster | None:
    """The poster of scale changes to Grafana's annotations, when they are turned on; its
    counts are pdscaler's metrics."""
    grafana = settings.grafana
    if not grafana.annotations or grafana.url is None or grafana.api_token is None:
        return None
    poster = AnnotationPoster(str(grafana.url), grafana.api_token.get_secret_value())
    for name, words in (("posted", "posted"), ("failed", "refused or out of retries"),
                        ("dropped", "dropped: the queue was full, or left at stop")):  # fmt: skip
        read = partial(getattr, poster, name)
        telemetry.count(f"pdscaler_grafana_annotations_{name}", f"Annotations {words}.", read)
    return poster


def _dashboard_links(settings: Settings) -> DashboardLinks | None:
    """Decisions link to the Grafana dashboard around them, when Grafana is configured."""
    grafana = settings.grafana
    if grafana.url is None:
        return None
    return DashboardLinks(str(grafana.url), grafana.dashboard_uid, grafana.link_window)


def _profile_errors(policy: Policy) -> list[FieldError]:
    errors = []
    for role in Role:
        for i, metric in enumerate(policy.spec.pool(role).metrics):
            if metric.profile is None:
                continue
            try:
                load_profile(metric.profile)
            except ProfileError as e:
                errors.append(FieldError(f"spec.{role.value}.metrics[{i}].profile", str(e)))
    return errors


def _profile(ref: str | None) -> PerfProfile | None:
    return load_profile(ref or DEFAULT_PROFILE)

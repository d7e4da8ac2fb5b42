"""Build the Kubernetes client from Settings: an API server URL with a token and a CA, a
kubeconfig file (and context), or the pod's service account."""

from __future__ import annotations

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from pdscaler.actuator.kubernetes import ActuatorConfig, KubernetesActuator
from pdscaler.actuator.leader import LeaseConfig, LeaseElector
from pdscaler.actuator.transport import Transport, TransportConfig
from pdscaler.config import KubernetesSettings, SettingsError
from pdscaler.domain.clock import Clock


def kubernetes_transport(settings: KubernetesSettings) -> Transport:
    configuration = client.Configuration()
    try:
        if settings.host is not None:
            configuration.host = settings.host.rstrip("/")
            if settings.token_file is not None:
                token = settings.token_file.read_text().strip()
                configuration.api_key = {"authorization": f"Bearer {token}"}
            if settings.ca_file is not None:
                configuration.ssl_ca_cert = str(settings.ca_file)
        elif settings.kubeconfig is not None:
            config.load_kube_config(
                config_file=str(settings.kubeconfig),
                context=settings.context,
                client_configuration=configuration,
            )
        else:
            config.load_incluster_config(client_configuration=configuration)
    except (ConfigException, OSError) as e:
        variable, where = _source(settings)
        raise SettingsError(f"invalid settings:\n  {variable}: cannot load {where}: {e}") from e
    # The transport owns retries (bounded, Retry-After capped); the client's own urllib3
    # retries would sleep a full Retry-After and hide dropped connections.
    configuration.retries = False
    transport_config = TransportConfig(
        request_timeout_s=settings.request_timeout.total_seconds(),
        qps=settings.qps,
        burst=settings.burst,
    )
    return Transport(client.ApiClient(configuration), transport_config)


def kubernetes_actuator(
    settings: KubernetesSettings, transport: Transport, clock: Clock
) -> KubernetesActuator:
    actuator_config = ActuatorConfig(
        unschedulable_after_s=settings.unschedulable_after.total_seconds()
    )
    return KubernetesActuator(transport, clock, actuator_config)


def lease_elector(
    settings: KubernetesSettings, transport: Transport, identity: str, clock: Clock
) -> LeaseElector:
    lease = LeaseConfig(
        namespace=settings.lease_namespace,
        name=settings.lease_name,
        identity=identity,
        lease_duration=settings.lease_duration,
        renew_deadline=settings.renew_deadline,
        retry_period=settings.retry_period,
    )
    return LeaseElector(transport, lease, clock)


def _source(settings: KubernetesSettings) -> tuple[str, str]:
    if settings.host is not None:
        return "PDSCALER_KUBERNETES__TOKEN_FILE", f"the token or CA for {settings.host}"
    if settings.kubeconfig is not None:
        return "PDSCALER_KUBERNETES__KUBECONFIG", str(settings.kubeconfig)
    return "PDSCALER_KUBERNETES__KUBECONFIG", "the in-cluster service account (no kubeconfig set)"

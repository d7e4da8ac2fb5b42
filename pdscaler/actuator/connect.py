"""Build the Kubernetes client from Settings: a kubeconfig file, or the pod's service account."""

from __future__ import annotations

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from pdscaler.actuator.kubernetes import ActuatorConfig, KubernetesActuator
from pdscaler.config import KubernetesSettings, SettingsError


def kubernetes_actuator(settings: KubernetesSettings) -> KubernetesActuator:
    configuration = client.Configuration()
    try:
        if settings.kubeconfig is not None:
            config.load_kube_config(
                config_file=str(settings.kubeconfig), client_configuration=configuration
            )
        else:
            config.load_incluster_config(client_configuration=configuration)
    except (ConfigException, OSError) as e:
        variable = "PDSCALER_KUBERNETES__KUBECONFIG"
        where = settings.kubeconfig or "the in-cluster service account (no kubeconfig set)"
        raise SettingsError(f"invalid settings:\n  {variable}: cannot load {where}: {e}") from e
    # The actuator owns retries (bounded, Retry-After capped); the client's own urllib3
    # retries would sleep a full Retry-After and hide dropped connections.
    configuration.retries = False
    actuator_config = ActuatorConfig(request_timeout_s=settings.request_timeout.total_seconds())
    return KubernetesActuator(client.ApiClient(configuration), actuator_config)

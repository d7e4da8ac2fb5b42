"""Finding, rendering and validating the manifests under deploy/.

Built-in kinds are validated against the Kubernetes OpenAPI schemas that the
``kubernetes-validate`` package ships, in strict mode (an unknown field is an error), for
the oldest and a recent Kubernetes version that pdscaler supports. Kinds it has no schema
for are checked here: a PDScalingPolicy by pdscaler's own parser, a LeaderWorkerSet and a
Prometheus Operator PodMonitor by the fields they use, with their embedded pod templates
and label selectors validated as the core types they are.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from pydantic import BaseModel

from pdscaler.config import ENV_NESTED_DELIMITER, ENV_PREFIX, Settings
from pdscaler.domain.policy import parse_policy

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = DEPLOY / "overlays"
EXAMPLES = DEPLOY / "examples"
# The oldest Kubernetes release pdscaler supports, and a recent one.
KUBERNETES_VERSIONS = ("1.30", "1.34")

Resource = dict[str, Any]


def documented_yaml(marker: str) -> dict[str, Any]:
    """The one YAML example of docs/deploy.md that contains ``marker``."""
    text = (REPO / "docs" / "deploy.md").read_text()
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL) if marker in b]
    document: dict[str, Any] = yaml.safe_load(block)
    return document


GRAFANA = DEPLOY / "grafana"  # Grafana's provisioning files: YAML, not Kubernetes objects


def yaml_files() -> list[Path]:
    """Every Kubernetes YAML file under deploy/."""
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
                  and GRAFANA not in p.parents)  # fmt: skip


def kustomization_dirs(root: Path) -> list[Path]:
    """The directories under ``root`` that hold a kustomization."""
    return sorted(p.parent for p in root.rglob("kustomization.yaml"))


def name(path: Path) -> str:
    """A path relative to the repository, for test ids and messages."""
    return str(path.relative_to(REPO))


# -- validation --------------------------------------------------------------------------


class Invalid(AssertionError):
    """A document that is not a valid object of its kind."""


def validate(resource: Resource) -> None:
    """Raise :class:`Invalid` unless ``resource`` is a valid object of its kind."""
    kind = (resource.get("apiVersion", ""), resource.get("kind", ""))
    checker = CUSTOM_KINDS.get(kind)
    if checker is not None:
        checker(resource)
        return
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError as e:
            raise Invalid(f"{kind}: no schema, and no check of its own: {e.message}") from e
        except kubernetes_validate.ValidationError as e:
            where = "/".join(str(p) for p in e.absolute_path)
            raise Invalid(f"{_id(resource)} (Kubernetes {version}) at {where}: {e.message}") from e


def _id(resource: Resource) -> str:
    return f"{resource.get('kind')}/{resource.get('metadata', {}).get('name')}"


def _check_policy(resource: Resource) -> None:
    parse_policy(resource)  # raises InvalidInput, listing every problem


def _only(
    mapping: Any, allowed: set[str], where: str, required: frozenset[str] = frozenset()
) -> None:
    if not isinstance(mapping, dict):
        raise Invalid(f"{where}: expected a mapping, got {mapping!r}")
    unknown, missing = sorted(set(mapping) - allowed), sorted(required - set(mapping))
    if unknown or missing:
        raise Invalid(f"{where}: unknown fields {unknown}, missing fields {missing}")


def _check_metadata(resource: Resource) -> None:
    """Validate ``metadata`` as a ConfigMap's, which has no other required field."""
    validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": resource.get("metadata")})


def validate_pod_template(template: Any, where: str) -> None:
    """Validate an embedded pod template as a core/v1 PodTemplateSpec."""
    pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}}
    try:
        validate({**pod_template, "template": template})
    except Invalid as e:
        raise Invalid(f"{where}: {e}") from e


def validate_label_selector(selector: Any, where: str) -> None:
    """Validate a meta/v1 LabelSelector (as the selector of a PodDisruptionBudget)."""
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "s"},
        "spec": {"selector": selector},
    }
    try:
        validate(pdb)
    except Invalid as e:
        raise Invalid(f"{where}: {e}") from e


_OBJECT_FIELDS = {"apiVersion", "kind", "metadata", "spec"}


def _check_leader_worker_set(resource: Resource) -> None:
    where = _id(resource)
    _only(resource, _OBJECT_FIELDS, where, frozenset({"metadata", "spec"}))
    _check_metadata(resource)
    spec = resource["spec"]
    allowed = {"replicas", "leaderWorkerTemplate", "rolloutStrategy", "startupPolicy"}
    _only(spec, allowed | {"networkConfig"}, f"{where} spec", frozenset({"leaderWorkerTemplate"}))
    if "replicas" in spec and not (isinstance(spec["replicas"], int) and spec["replicas"] >= 0):
        raise Invalid(f"{where}: spec.replicas must be a non-negative integer")
    if spec.get("startupPolicy", "LeaderCreated") not in ("LeaderCreated", "LeaderReady"):
        raise Invalid(f"{where}: spec.startupPolicy must be LeaderCreated or LeaderReady")
    template = spec["leaderWorkerTemplate"]
    fields = {"size", "leaderTemplate", "workerTemplate", "restartPolicy", "subGroupPolicy"}
    _only(template, fields, f"{where} leaderWorkerTemplate", frozenset({"workerTemplate"}))
    size = template.get("size", 1)
    if not (isinstance(size, int) and size >= 1):
        raise Invalid(f"{where}: leaderWorkerTemplate.size must be a positive integer")
    restart = template.get("restartPolicy", "RecreateGroupOnPodRestart")
    if restart not in ("RecreateGroupOnPodRestart", "None"):
        raise Invalid(f"{where}: restartPolicy must be RecreateGroupOnPodRestart or None")
    for key in ("leaderTemplate", "workerTemplate"):
        if key in template:
            validate_pod_template(template[key], f"{where} {key}")


_ENDPOINT_FIELDS = {"port", "path", "interval", "scrapeTimeout", "scheme", "relabelings"}
_RELABEL_FIELDS = {"sourceLabels", "targetLabel", "regex", "replacement", "action", "separator"}


def _check_pod_monitor(resource: Resource) -> None:
    where = _id(resource)
    _only(resource, _OBJECT_FIELDS, where, frozenset({"metadata", "spec"}))
    _check_metadata(resource)
    spec = resource["spec"]
    allowed = {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel"}
    _only(spec, allowed, f"{where} spec", frozenset({"selector", "podMetricsEndpoints"}))
    validate_label_selector(spec["selector"], f"{where} selector")
    for i, endpoint in enumerate(spec["podMetricsEndpoints"]):
        _only(endpoint, _ENDPOINT_FIELDS | {"metricRelabelings"}, f"{where} endpoint {i}")
        for j, rule in enumerate(endpoint.get("relabelings", [])):
            _only(rule, _RELABEL_FIELDS, f"{where} endpoint {i} relabeling {j}")


CUSTOM_KINDS: dict[tuple[str, str], Callable[[Resource], None]] = {
    ("pdscaler.io/v1alpha1", "PDScalingPolicy"): _check_policy,
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"): _check_leader_worker_set,
    ("monitoring.coreos.com/v1", "PodMonitor"): _check_pod_monitor,
}


# -- reading rendered objects ------------------------------------------------------------


def find(resources: list[Resource], kind: str, name: str) -> Resource:
    matches = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def pod_templates(resource: Resource) -> Iterator[tuple[str, Resource]]:
    """(where, pod template) of every pod template in a workload."""
    spec = resource.get("spec", {})
    if "template" in spec and resource["kind"] != "PodTemplate":
        yield "template", spec["template"]
    for key in ("leaderTemplate", "workerTemplate"):
        if key in spec.get("leaderWorkerTemplate", {}):
            yield key, spec["leaderWorkerTemplate"][key]


def containers(template: Resource) -> list[Resource]:
    """The init containers and containers of a pod template."""
    spec = template["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def selects(selector: Resource, labels: dict[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels and In / NotIn / Exists) selects ``labels``."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not ok:
            return False
    return True


# -- settings ----------------------------------------------------------------------------


def setting_names() -> set[str]:
    """Every PDSCALER_ variable that names a setting, read from the Settings model."""
    names = set()
    for field_name, field in Settings.model_fields.items():
        group = field.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            for member in group.model_fields:
                names.add(f"{ENV_PREFIX}{field_name}{ENV_NESTED_DELIMITER}{member}".upper())
        else:
            names.add(f"{ENV_PREFIX}{field_name}".upper())
    return names

"""A strict renderer for the part of kustomize that deploy/ uses, for the tests.

Debian ships no kustomize that reads today's kustomization syntax: the kubectl of its
``kubernetes-client`` package (1.20) embeds kustomize 2.0, which knows neither ``labels``
nor ``patches`` with a ``target``. So the tests render deploy/ with this module instead.

It implements what deploy/ uses, with kustomize v5's meaning, and raises
:class:`Unsupported` on anything else, so that a kustomization using something new fails
the tests until it is implemented here. ``test_kustomize.py`` compares its output with
the real kustomize wherever one is installed.

Supported: ``resources`` (files inside the kustomization's directory, and directories
holding a kustomization), ``namespace``, ``labels`` (``pairs`` only), ``images``,
``patches`` (JSON 6902 operations add, remove, replace and test, on a ``target`` picked by
group, version, kind, name and namespace), and ``secretGenerator`` (``literals``, with
the name suffix hash disabled). As kustomize does, patches apply first, then the
namespace, the labels and the images.
"""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
KUSTOMIZATION_KEYS = frozenset(
    {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
    | {"secretGenerator"}
)
# Kinds that have no namespace: the namespace transformer leaves them alone.
CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PersistentVolume",
        "StorageClass",
        "PriorityClass",
        "IngressClass",
        "RuntimeClass",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "APIService",
    }
)
BINDING_KINDS = frozenset({"RoleBinding", "ClusterRoleBinding"})


class Unsupported(Exception):
    """The kustomization uses a feature this renderer does not implement."""


class BuildError(Exception):
    """The kustomization is wrong: what kustomize itself would refuse to build."""


def build(directory: Path) -> list[Resource]:
    """Render the kustomization in ``directory``, as ``kustomize build`` would."""
    kustomization = load_kustomization(directory)
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        resources.extend(_resource(directory, entry))
    resources.extend(_secret(spec) for spec in kustomization.get("secretGenerator", []))
    _check_unique(resources, directory)
    for patch in kustomization.get("patches", []):
        _apply_patch(resources, patch, directory)
    if "namespace" in kustomization:
        _set_namespace(resources, kustomization["namespace"])
    for label in kustomization.get("labels", []):
        _add_labels(resources, label)
    for image in kustomization.get("images", []):
        _set_image(resources, image)
    return resources


def kustomization_file(directory: Path) -> Path | None:
    found = [directory / name for name in KUSTOMIZATION_FILES if (directory / name).is_file()]
    if len(found) > 1:
        raise BuildError(f"{directory}: more than one kustomization file")
    return found[0] if found else None


def load_kustomization(directory: Path) -> dict[str, Any]:
    """The kustomization of ``directory``, its keys checked."""
    path = kustomization_file(directory)
    if path is None:
        raise BuildError(f"{directory}: no kustomization file")
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise BuildError(f"{path}: not a mapping")
    unknown = sorted(set(document) - KUSTOMIZATION_KEYS)
    if unknown:
        raise Unsupported(f"{path}: unsupported kustomization keys {unknown}")
    if (
        document.get("apiVersion", "kustomize.config.k8s.io/v1beta1")
        != ("kustomize.config.k8s.io/v1beta1")
        or document.get("kind", "Kustomization") != "Kustomization"
    ):
        raise Unsupported(f"{path}: only a kustomize.config.k8s.io/v1beta1 Kustomization")
    return document


def read_documents(path: Path) -> list[Resource]:
    """Every non-empty YAML document of a file."""
    documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    for document in documents:
        if not isinstance(document, dict) or "kind" not in document:
            raise BuildError(f"{path}: a document is not a Kubernetes object")
    return documents


def _resource(directory: Path, entry: str) -> list[Resource]:
    if "://" in entry or entry.startswith(("git@", "github.com/")):
        raise Unsupported(f"{directory}: remote resource {entry}")
    path = (directory / entry).resolve()
    if path.is_dir():
        return build(path)
    if not path.is_file():
        raise BuildError(f"{directory}: resource {entry} does not exist")
    # kustomize's default load restrictor: files only from inside the kustomization root.
    if not path.is_relative_to(directory.resolve()):
        raise BuildError(f"{directory}: file {entry} is outside the kustomization directory")
    return read_documents(path)


def _secret(spec: dict[str, Any]) -> Resource:
    unknown = sorted(set(spec) - {"name", "literals", "type", "options"})
    if unknown:
        raise Unsupported(f"secretGenerator {spec.get('name')}: unsupported keys {unknown}")
    options = spec.get("options", {})
    if options != {"disableNameSuffixHash": True}:
        # The hash suffix (and rewriting every reference to it) is not implemented.
        raise Unsupported(f"secretGenerator {spec['name']}: needs disableNameSuffixHash: true")
    data = {}
    for literal in spec.get("literals", []):
        key, sep, value = literal.partition("=")
        if not sep or not key:
            raise BuildError(f"secretGenerator {spec['name']}: literal {literal!r} is not k=v")
        if value[:1] in ("'", '"'):
            raise Unsupported(f"secretGenerator {spec['name']}: quoted literal {key}")
        data[key] = base64.b64encode(value.encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": spec["name"]},
        "type": spec.get("type", "Opaque"),
        "data": data,
    }


def resource_id(resource: Resource) -> tuple[str, str, str, str]:
    """(group, kind, namespace, name): what makes a resource unique."""
    metadata = resource.get("metadata", {})
    return (
        _group(resource.get("apiVersion", "")),
        resource["kind"],
        metadata.get("namespace", ""),
        metadata.get("name", ""),
    )


def _check_unique(resources: list[Resource], directory: Path) -> None:
    seen: set[tuple[str, str, str, str]] = set()
    for resource in resources:
        key = resource_id(resource)
        if key in seen:
            raise BuildError(f"{directory}: resource {key} is defined twice")
        seen.add(key)


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


# -- patches -----------------------------------------------------------------------------


def _apply_patch(resources: list[Resource], spec: dict[str, Any], directory: Path) -> None:
    unknown = sorted(set(spec) - {"path", "patch", "target"})
    if unknown:
        raise Unsupported(f"{directory}: patch keys {unknown}")
    if ("path" in spec) == ("patch" in spec):
        raise BuildError(f"{directory}: a patch needs exactly one of path and patch")
    text = (directory / spec["path"]).read_text() if "path" in spec else spec["patch"]
    operations = yaml.safe_load(text)
    if not isinstance(operations, list):
        raise Unsupported(f"{directory}: strategic-merge patches (only JSON 6902 lists)")
    if "target" not in spec:
        raise BuildError(f"{directory}: a JSON 6902 patch needs a target")
    targets = [r for r in resources if _selected(r, spec["target"], directory)]
    if not targets:
        raise BuildError(f"{directory}: patch target {spec['target']} matches nothing")
    for resource in targets:
        for operation in operations:
            apply_operation(resource, operation)


def _selected(resource: Resource, target: dict[str, Any], directory: Path) -> bool:
    unknown = sorted(set(target) - {"group", "version", "kind", "name", "namespace"})
    if unknown:
        raise Unsupported(f"{directory}: patch target selectors {unknown}")
    for value in target.values():
        if re.search(r"[\\^$.|?*+()\[\]{}]", str(value).replace(".", "")):
            raise Unsupported(f"{directory}: a regular expression in patch target {target}")
    group, _, version = resource.get("apiVersion", "").rpartition("/")
    actual = {
        "group": group,
        "version": version,
        "kind": resource["kind"],
        "name": resource.get("metadata", {}).get("name", ""),
        "namespace": resource.get("metadata", {}).get("namespace", ""),
    }
    return all(actual[key] == value for key, value in target.items())


def apply_operation(document: Resource, operation: dict[str, Any]) -> None:
    """One JSON 6902 operation, in place. Raises BuildError when it cannot apply."""
    op, path = operation.get("op"), operation.get("path")
    if op not in ("add", "remove", "replace", "test") or not isinstance(path, str):
        raise Unsupported(f"JSON patch operation {operation}")
    parent, key = _parent(document, path)
    if op == "test":
        if _get(parent, key, path) != operation["value"]:
            raise BuildError(f"JSON patch test failed at {path}: {_get(parent, key, path)!r}")
    elif op == "remove":
        _get(parent, key, path)
        del parent[_index(parent, key, path)]
    elif op == "replace":
        _get(parent, key, path)
        parent[_index(parent, key, path)] = copy.deepcopy(operation["value"])
    elif isinstance(parent, list):
        position = len(parent) if key == "-" else _index(parent, key, path, inserting=True)
        parent.insert(position, copy.deepcopy(operation["value"]))
    else:
        parent[key] = copy.deepcopy(operation["value"])


def _tokens(path: str) -> list[str]:
    if not path.startswith("/"):
        raise BuildError(f"JSON pointer {path!r} must start with /")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _parent(document: Any, path: str) -> tuple[Any, str]:
    *walk, key = _tokens(path)
    node = document
    for token in walk:
        node = _get(node, token, path)
    if not isinstance(node, dict | list):
        raise BuildError(f"JSON pointer {path}: not inside an object or a list")
    return node, key


def _index(node: Any, key: str, path: str, *, inserting: bool = False) -> Any:
    if isinstance(node, dict):
        return key
    if not key.isdigit() or int(key) > len(node) - (0 if inserting else 1):
        raise BuildError(f"JSON pointer {path}: no list index {key}")
    return int(key)


def _get(node: Any, key: str, path: str) -> Any:
    if isinstance(node, dict):
        if key not in node:
            raise BuildError(f"JSON pointer {path}: no member {key}")
        return node[key]
    if isinstance(node, list):
        return node[_index(node, key, path)]
    raise BuildError(f"JSON pointer {path}: {key} is inside a scalar")


# -- namespace, labels, images -----------------------------------------------------------


def _set_namespace(resources: list[Resource], namespace: str) -> None:
    for resource in resources:
        if resource["kind"] in BINDING_KINDS:
            # kustomize rewrites some subjects' namespaces by rules of its own; the tree
            # spells them out instead, and they must agree with the kustomization.
            for subject in resource.get("subjects", []):
                if subject.get("kind") == "ServiceAccount" and subject.get("namespace") != (
                    namespace
                ):
                    raise Unsupported(f"subject {subject} of {resource_id(resource)}")
        if resource["kind"] not in CLUSTER_SCOPED:
            resource.setdefault("metadata", {})["namespace"] = namespace


def _add_labels(resources: list[Resource], spec: dict[str, Any]) -> None:
    unknown = sorted(set(spec) - {"pairs", "includeSelectors", "includeTemplates"})
    if unknown or spec.get("includeSelectors") or spec.get("includeTemplates"):
        raise Unsupported(f"labels {spec}: only pairs, on metadata")
    for resource in resources:
        labels = resource.setdefault("metadata", {}).setdefault("labels", {})
        labels.update(spec["pairs"])


def _set_image(resources: list[Resource], spec: dict[str, Any]) -> None:
    unknown = sorted(set(spec) - {"name", "newName", "newTag", "digest"})
    if unknown:
        raise Unsupported(f"images {spec}: keys {unknown}")
    for container in (c for r in resources for c in _containers(r)):
        name, tag, digest = split_image(container.get("image", ""))
        if name != spec["name"]:
            continue
        name = spec.get("newName", name)
        if "digest" in spec:
            tag, digest = None, spec["digest"]
        elif "newTag" in spec:
            tag, digest = str(spec["newTag"]), None
        container["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """(name, tag, digest) of an image reference."""
    image, _, digest = image.partition("@")
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:  # no tag; the colon, if any, was a registry's port
        return image, None, digest or None
    return name, tag, digest or None


def _containers(node: Any) -> Iterator[dict[str, Any]]:
    """Every container and init container, at any depth (as kustomize's image filter)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from (c for c in value if isinstance(c, dict))
            else:
                yield from _containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _containers(item)

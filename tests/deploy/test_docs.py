"""What docs/deploy.md shows works on the tree as it is: the overlays it tells users to
write build, and its RBAC table is the ClusterRole."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from tests.deploy import kustomize
from tests.deploy.manifests import (
    DEPLOY,
    OVERLAYS,
    REPO,
    containers,
    documented_yaml,
    find,
    validate,
)

DOC = REPO / "docs" / "deploy.md"


def build_overlay(tmp_path: Path, kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    """Build a user's overlay of postgres-external, written in ``tmp_path``."""
    base = os.path.relpath(OVERLAYS / "postgres-external", tmp_path)
    kustomization = {**kustomization, "resources": [base]}
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return kustomize.build(tmp_path)


def test_your_own_overlay_sets_the_image_and_prometheus(tmp_path: Path) -> None:
    documented = documented_yaml("my-pdscaler/kustomization.yaml")

    assert documented["resources"] == ["../deploy/overlays/postgres-external"]
    rendered = build_overlay(tmp_path, documented)

    settings = find(rendered, "ConfigMap", "pdscaler-settings")["data"]
    assert settings["PDSCALER_PROMETHEUS__URL"] == "https://mimir.example.com/prometheus"
    pod = find(rendered, "Deployment", "pdscaler")["spec"]["template"]
    images = {c["image"] for c in containers(pod)}
    assert images == {"registry.example.com/pdscaler:0.1.0"}


def test_the_init_container_can_be_removed(tmp_path: Path) -> None:
    documented = documented_yaml("/spec/template/spec/initContainers")

    rendered = build_overlay(tmp_path, documented)

    pod = find(rendered, "Deployment", "pdscaler")["spec"]["template"]
    assert "initContainers" not in pod["spec"]
    validate(find(rendered, "Deployment", "pdscaler"))


def test_the_namespace_role_binding_is_valid() -> None:
    binding = documented_yaml("kind: RoleBinding")
    rendered = kustomize.build(DEPLOY / "base")

    validate(binding)
    assert binding["roleRef"]["kind"] == "ClusterRole"
    find(rendered, "ClusterRole", binding["roleRef"]["name"])
    assert binding["subjects"] == find(rendered, "ClusterRoleBinding", "pdscaler")["subjects"]


def test_the_rbac_table_is_the_cluster_role() -> None:
    section = DOC.read_text().split("## What the RBAC grants, and why")[1].split("\n## ")[0]
    rows = re.findall(r"^\| `([^`]*)`[^|]*\| ([^|]+) \| ([^|]+) \|", section, flags=re.M)
    documented = [
        {
            "apiGroups": [group.strip('"')],  # the core group, written `""`
            "resources": re.findall(r"`([^`]+)`", resources),
            "verbs": [v.strip() for v in verbs.split(",")],
        }
        for group, resources, verbs in rows
    ]
    role = find(kustomize.build(DEPLOY / "base"), "ClusterRole", "pdscaler")

    assert documented == role["rules"]

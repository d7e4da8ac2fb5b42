"""The test renderer of kustomizations: strict where it does not know, and faithful where
it does. Where a real kustomize (v4 or newer, alone or inside kubectl) is installed, every
kustomization under deploy/ renders to the same objects with both."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import kustomize
from tests.deploy.manifests import DEPLOY, OVERLAYS, documented_yaml, kustomization_dirs, name

CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {a: "1"}
"""
DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  selector: {matchLabels: {app: x}}
  template:
    metadata: {labels: {app: x}}
    spec:
      initContainers: [{name: init, image: "registry.example:5000/app:1.0"}]
      containers: [{name: app, image: "registry.example:5000/app:1.0"}]
"""


def write(directory: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return directory


def test_builds_resources_from_files_and_directories_then_transforms(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "base/kustomization.yaml": "resources: [configmap.yaml]\nnamespace: one\n",
            "base/configmap.yaml": CONFIGMAP,
            "overlay/kustomization.yaml": """\
                resources: [../base, deployment.yaml]
                namespace: two
                labels: [{pairs: {team: x}}]
                images: [{name: "registry.example:5000/app", newTag: "2.0"}]
                patches:
                  - target: {version: v1, kind: ConfigMap, name: settings}
                    patch: |-
                      - {op: test, path: /data/a, value: "1"}
                      - {op: add, path: /data/b, value: "2"}
                      - {op: remove, path: /data/a}
                secretGenerator:
                  - name: creds
                    literals: [url=postgresql://u:p=q@db/x]
                    options: {disableNameSuffixHash: true}
                """,
            "overlay/deployment.yaml": DEPLOYMENT,
        },
    )

    rendered = {r["kind"]: r for r in kustomize.build(tmp_path / "overlay")}

    assert rendered["ConfigMap"]["data"] == {"b": "2"}
    assert {r["metadata"]["namespace"] for r in rendered.values()} == {"two"}
    assert {r["metadata"]["labels"]["team"] for r in rendered.values()} == {"x"}
    pod = rendered["Deployment"]["spec"]["template"]
    assert "team" not in pod["metadata"]["labels"]  # pairs alone do not touch templates
    images = [c["image"] for c in [*pod["spec"]["initContainers"], *pod["spec"]["containers"]]]
    assert images == ["registry.example:5000/app:2.0"] * 2
    secret = rendered["Secret"]
    assert secret["type"] == "Opaque"
    assert base64.b64decode(secret["data"]["url"]).decode() == "postgresql://u:p=q@db/x"


@pytest.mark.parametrize(
    ("image", "spec", "expected"),
    [
        ("app", {"name": "app", "newTag": "2"}, "app:2"),
        ("app:1", {"name": "app", "newName": "r.example/app"}, "r.example/app:1"),
        ("app:1", {"name": "app", "digest": "sha256:ab"}, "app@sha256:ab"),
        ("r.io:5000/app", {"name": "r.io:5000/app", "newTag": "3"}, "r.io:5000/app:3"),
        ("other:1", {"name": "app", "newTag": "2"}, "other:1"),
    ],
    ids=["add-tag", "new-name", "digest", "registry-port", "other-image"],
)
def test_images(tmp_path: Path, image: str, spec: dict[str, str], expected: str) -> None:
    write(
        tmp_path,
        {
            "kustomization.yaml": f"resources: [d.yaml]\nimages: [{json.dumps(spec)}]\n",
            "d.yaml": DEPLOYMENT.replace('"registry.example:5000/app:1.0"', image),
        },
    )

    (deployment,) = kustomize.build(tmp_path)

    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == expected


@pytest.mark.parametrize(
    ("kustomization", "error"),
    [
        ("resources: [c.yaml]\ncommonLabels: {a: b}\n", "unsupported kustomization keys"),
        ("resources: [c.yaml]\nconfigMapGenerator: [{name: x}]\n", "unsupported kustomization"),
        ("resources: [https://example.com/x]\n", "remote resource"),
        ("resources: [c.yaml]\nlabels: [{pairs: {a: b}, includeSelectors: true}]\n", "labels"),
        ("resources: [c.yaml]\nlabels: [{pairs: {a: b}, includeTemplates: true}]\n", "labels"),
        (
            "resources: [c.yaml]\nsecretGenerator: [{name: s, literals: [a=b]}]\n",
            "disableNameSuffixHash",
        ),
        (
            "resources: [c.yaml]\npatches: [{target: {kind: ConfigMap}, patch: 'data: {a: b}'}]\n",
            "strategic-merge",
        ),
        (
            "resources: [c.yaml]\n"
            "patches: [{target: {kind: ConfigMap, name: 'set.*'}, patch: '[]'}]\n",
            "regular expression",
        ),
        (
            "resources: [c.yaml]\npatches: [{target: {labelSelector: a=b}, patch: '[]'}]\n",
            "selectors",
        ),
        (
            "resources: [c.yaml]\npatches: [{target: {kind: ConfigMap}, "
            "patch: '[{op: move, from: /data/a, path: /data/b}]'}]\n",
            "JSON patch operation",
        ),
    ],
    ids=[
        "commonLabels",
        "configMapGenerator",
        "remote",
        "label-selectors",
        "label-templates",
        "hashed-secret",
        "strategic-merge",
        "target-regex",
        "label-target",
        "move",
    ],
)
def test_refuses_what_it_does_not_implement(tmp_path: Path, kustomization: str, error: str) -> None:
    write(tmp_path, {"kustomization.yaml": kustomization, "c.yaml": CONFIGMAP})

    with pytest.raises(kustomize.Unsupported, match=error):
        kustomize.build(tmp_path)


@pytest.mark.parametrize(
    ("patch", "error"),
    [
        ('[{op: test, path: /data/a, value: "2"}]', "test failed"),
        ("[{op: replace, path: /data/missing, value: x}]", "no member missing"),
        ("[{op: remove, path: /metadata/labels/x}]", "no member labels"),
        ("[{op: add, path: /data/a/b, value: x}]", "not inside an object or a list"),
    ],
    ids=["test-op", "replace-missing", "remove-missing", "add-under-scalar"],
)
def test_a_patch_that_does_not_apply_fails_the_build(
    tmp_path: Path, patch: str, error: str
) -> None:
    target = "{kind: ConfigMap}"
    kustomization = f"resources: [c.yaml]\npatches: [{{target: {target}, patch: '{patch}'}}]\n"
    write(tmp_path, {"kustomization.yaml": kustomization, "c.yaml": CONFIGMAP})

    with pytest.raises(kustomize.BuildError, match=error):
        kustomize.build(tmp_path)


@pytest.mark.parametrize(
    ("files", "error"),
    [
        (
            {"kustomization.yaml": "resources: [c.yaml, c.yaml]\n", "c.yaml": CONFIGMAP},
            "defined twice",
        ),
        (
            {
                "k/kustomization.yaml": "resources: [../c.yaml]\n",
                "c.yaml": CONFIGMAP,
            },
            "outside the kustomization directory",
        ),
        (
            {
                "kustomization.yaml": "resources: [c.yaml]\n"
                "patches: [{target: {kind: Secret}, patch: '[]'}]\n",
                "c.yaml": CONFIGMAP,
            },
            "matches nothing",
        ),
        ({"kustomization.yaml": "resources: [missing.yaml]\n"}, "does not exist"),
    ],
    ids=["duplicate", "file-outside-root", "target-matches-nothing", "missing-file"],
)
def test_wrong_kustomizations_fail(tmp_path: Path, files: dict[str, str], error: str) -> None:
    write(tmp_path, files)
    directory = tmp_path / "k" if "k/kustomization.yaml" in files else tmp_path

    with pytest.raises(kustomize.BuildError, match=error):
        kustomize.build(directory)


# -- the real kustomize ------------------------------------------------------------------


def real_kustomize() -> list[str] | None:
    """The build command of an installed kustomize v4 or newer, alone or inside kubectl."""
    candidates = [
        (["kustomize", "version"], ["kustomize", "build"]),
        (["kubectl", "version", "--client"], ["kubectl", "kustomize"]),
    ]
    for version_command, build_command in candidates:
        if shutil.which(version_command[0]) is None:
            continue
        version = subprocess.run(version_command, capture_output=True, text=True, check=False)
        # "v5.5.0", "{Version:kustomize/v5.5.0 ...}", or kubectl's "Kustomize Version: v5.5.0"
        found = re.search(r"(?:Kustomize Version: |kustomize/|^)v(\d+)\.", version.stdout, re.M)
        if found and int(found.group(1)) >= 4:
            return build_command
    return None


def normalized(resources: list[dict[str, Any]]) -> dict[tuple[str, ...], Any]:
    """Objects by id, in JSON form, with Secret data decoded (kustomize may wrap base64)."""
    out = {}
    for resource in resources:
        resource = json.loads(json.dumps(resource))
        if resource["kind"] == "Secret":
            data = resource.get("data", {})
            resource["data"] = {k: base64.b64decode(v).decode() for k, v in data.items()}
        out[kustomize.resource_id(resource)] = resource
    return out


def user_overlay(tmp_path: Path) -> Path:
    """The overlay docs/deploy.md tells users to write (image and Prometheus URL)."""
    kustomization = documented_yaml("my-pdscaler/kustomization.yaml")
    kustomization["resources"] = [os.path.relpath(OVERLAYS / "postgres-external", tmp_path)]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return tmp_path


@pytest.mark.parametrize(
    "directory",
    [*kustomization_dirs(DEPLOY), None],
    ids=[*(name(d) for d in kustomization_dirs(DEPLOY)), "user-overlay"],
)
def test_renders_as_the_real_kustomize(directory: Path | None, tmp_path: Path) -> None:
    command = real_kustomize()
    if command is None:
        pytest.skip("no kustomize v4+ (nor kubectl with one) installed")
    directory = directory or user_overlay(tmp_path)
    output = subprocess.run(
        [*command, str(directory)], capture_output=True, text=True, check=True
    ).stdout

    expected = normalized([d for d in yaml.safe_load_all(output) if d])

    assert normalized(kustomize.build(directory)) == expected

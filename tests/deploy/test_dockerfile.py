"""The Dockerfile and .dockerignore, read as text (no image is built here): the image is
built from exactly what the wheel needs, holds no development tools, and runs pdscaler as
the user, on the port and with the settings that the manifests expect."""

from __future__ import annotations

import json
import re
import shlex
import tomllib

import pytest

from pdscaler.config import ApiSettings
from tests.deploy import kustomize
from tests.deploy.manifests import DEPLOY, REPO, Resource, find, setting_names

Instruction = tuple[str, str]


def instructions(text: str) -> list[Instruction]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = "\n".join(lines).replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            found.append((keyword.upper(), " ".join(arguments.split())))
    return found


def stages() -> list[list[Instruction]]:
    """The instructions of each stage, each starting with its FROM."""
    result: list[list[Instruction]] = []
    for instruction in instructions((REPO / "Dockerfile").read_text()):
        if instruction[0] == "FROM":
            result.append([])
        result[-1].append(instruction)
    return result


def arguments(stage: list[Instruction], keyword: str) -> list[str]:
    return [a for k, a in stage if k == keyword]


def environment(stage: list[Instruction]) -> dict[str, str]:
    return dict(item.split("=", 1) for env in arguments(stage, "ENV") for item in shlex.split(env))


def pdscaler_pod() -> Resource:
    pod: Resource = find(kustomize.build(DEPLOY / "base"), "Deployment", "pdscaler")["spec"][
        "template"
    ]
    return pod


def test_two_stages_on_python_3_11_slim() -> None:
    build, final = stages()

    assert build[0] == ("FROM", "python:3.11-slim AS build")
    assert final[0] == ("FROM", "python:3.11-slim")


def test_the_package_is_installed_without_development_tools() -> None:
    build, final = stages()
    text = (REPO / "Dockerfile").read_text()

    assert "/opt/pdscaler/bin/pip install ." in arguments(build, "RUN")
    assert "[dev]" not in text
    assert " -e " not in text  # not editable: the source tree is not in the final image
    assert arguments(final, "RUN") == [a for a in arguments(final, "RUN") if "pip" not in a]
    assert arguments(final, "COPY") == ["--from=build /opt/pdscaler /opt/pdscaler"]


def test_runs_as_uid_10001_like_the_deployment() -> None:
    final = stages()[-1]
    (setup,) = arguments(final, "RUN")
    pod = pdscaler_pod()

    keywords = [keyword for keyword, _ in final]
    assert arguments(final, "USER") == ["10001:10001"]
    assert keywords.index("USER") > keywords.index("RUN")  # set up as root, then drop it
    assert "--uid 10001" in setup
    assert "--gid 10001" in setup
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001
    assert pod["spec"]["securityContext"]["runAsGroup"] == 10001


def test_serves_on_the_port_the_deployment_declares() -> None:
    final = stages()[-1]
    (container,) = pdscaler_pod()["spec"]["containers"]

    assert arguments(final, "EXPOSE") == ["8080"]
    assert json.loads(arguments(final, "ENTRYPOINT")[0]) == ["pdscaler"]
    assert json.loads(arguments(final, "CMD")[0]) == ["serve"]
    assert container["ports"][0]["containerPort"] == 8080 == ApiSettings().port


def test_its_settings_are_pdscalers() -> None:
    env = environment(stages()[-1])
    settings = {k: v for k, v in env.items() if k.startswith("PDSCALER_")}

    assert sorted(set(settings) - setting_names()) == []
    assert settings == {
        "PDSCALER_API__HOST": "0.0.0.0",  # noqa: S104 (inside the container)
        "PDSCALER_DATA_DIR": "/var/lib/pdscaler",
    }
    assert env["PATH"].startswith("/opt/pdscaler/bin:")


# -- the build context -------------------------------------------------------------------


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regular expression (Go's filepath.Match, plus **)."""
    out = ""
    for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip().strip("/")):
        out += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
            token, re.escape(token)
        )
    return re.compile(out)


def ignored(path: str, rules: list[str]) -> bool:
    """Whether docker leaves ``path`` out of the build context: the last rule that matches
    the path or one of its parent directories decides."""
    parents = ["/".join(path.split("/")[: i + 1]) for i in range(path.count("/") + 1)]
    result = False
    for rule in rules:
        negated = rule.startswith("!")
        if any(_pattern(rule.removeprefix("!")).fullmatch(p) for p in parents):
            result = not negated
    return result


def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize(
    ("path", "is_ignored"),
    [
        ("pdscaler/cli.py", False),
        ("pdscaler/__pycache__/cli.cpython-311.pyc", True),
        ("tests/conftest.py", True),
        ("__pycache__/x.pyc", True),
        ("pyproject.toml", False),
        ("pyproject.toml.orig", True),
        ("pdscaler/profiles/data/x/raw_data.npz", False),
    ],
)
def test_the_dockerignore_reader(path: str, is_ignored: bool) -> None:
    rules = ["*", "!pyproject.toml", "!pdscaler/", "**/__pycache__"]

    assert ignored(path, rules) is is_ignored


def test_the_build_context_holds_what_the_wheel_is_built_from() -> None:
    """Every source the build stage copies exists and is sent, with every file of the
    package, its migrations and example policies; nothing else of the repository is."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    hatch = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = {
        "pyproject.toml",
        pyproject["project"]["readme"],
        *hatch["packages"],
        *hatch["force-include"],
    }
    copied = {source for copy in arguments(stages()[0], "COPY") for source in copy.split()[:-1]}
    rules = dockerignore()

    assert needed <= copied
    for source in copied:
        assert (REPO / source).exists(), source
        files = [REPO / source] if (REPO / source).is_file() else (REPO / source).rglob("*")
        for path in files:
            relative = str(path.relative_to(REPO))
            if path.is_file() and "__pycache__" not in relative:
                assert not ignored(relative, rules), relative
    for left_out in ("tests/conftest.py", "deploy/base/rbac.yaml", ".venv/bin/python",
                     ".git/HEAD", "data/pdscaler.db", "docs/deploy.md"):  # fmt: skip
        assert ignored(left_out, rules), left_out


def test_the_bundled_profiles_are_sent() -> None:
    """The package's data files are not Python: a pattern on *.py would drop them."""
    profiles = [p for p in (REPO / "pdscaler" / "profiles" / "data").rglob("*") if p.is_file()]

    assert profiles
    for path in profiles:
        assert not ignored(str(path.relative_to(REPO)), dockerignore())


def test_a_python_only_rule_would_drop_the_profiles() -> None:
    assert ignored("pdscaler/profiles/data/x/raw_data.npz", ["*", "!pdscaler/**/*.py"])
    assert not ignored("pdscaler/profiles/dynamo.py", ["*", "!pdscaler/**/*.py"])

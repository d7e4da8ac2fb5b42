"""Policies as files (GitOps): YAML or JSON, one or more documents per file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from pdscaler.domain.errors import FieldError, InvalidInput
from pdscaler.domain.policy import Policy, parse_policy

SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class PolicyFile:
    """One document of one file: the policy, or why it is not one."""

    path: Path
    index: int
    policy: Policy | None
    errors: tuple[FieldError, ...] = ()

    @property
    def where(self) -> str:
        return f"{self.path}" + (f" (document {self.index + 1})" if self.index else "")


def policy_paths(target: Path) -> list[Path]:
    """``target`` itself, or every policy file below it, in name order."""
    if target.is_dir():
        return sorted(p for p in target.rglob("*") if p.suffix in SUFFIXES and p.is_file())
    if not target.exists():
        raise FileNotFoundError(f"{target}: no such file or directory")
    return [target]


def read_policies(target: Path) -> list[PolicyFile]:
    """Every document under ``target``. A policy defined a second time is an error there."""
    items = [item for path in policy_paths(target) for item in _read(path)]
    first: dict[tuple[str, str], PolicyFile] = {}
    for i, item in enumerate(items):
        if item.policy is None:
            continue
        earlier = first.setdefault(item.policy.key, item)
        if earlier is not item:
            where = f"{'/'.join(item.policy.key)} is already defined in {earlier.where}"
            items[i] = PolicyFile(item.path, item.index, None, (FieldError("metadata", where),))
    return items


def _read(path: Path) -> Iterator[PolicyFile]:
    try:
        text = path.read_text(encoding="utf-8")
        documents = (
            [json.loads(text)]
            if path.suffix == ".json"
            else [d for d in yaml.safe_load_all(text) if d is not None]
        )
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as e:
        yield PolicyFile(path, 0, None, (FieldError("", " ".join(str(e).split())),))
        return
    for index, document in enumerate(documents):
        try:
            yield PolicyFile(path, index, parse_policy(document))
        except InvalidInput as e:
            yield PolicyFile(path, index, None, e.errors)

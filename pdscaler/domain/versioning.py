"""Policy history: stored policies, immutable versions, and the diff between two versions."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import yaml

from pdscaler.domain.policy import Policy


class ChangeKind(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    PATCH = "patch"
    ROLLBACK = "rollback"
    PAUSE = "pause"
    RESUME = "resume"
    DELETE = "delete"


@dataclass(frozen=True)
class StoredPolicy:
    policy: Policy
    version: int
    created_at: datetime
    updated_at: datetime
    updated_by: str

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


@dataclass(frozen=True)
class PolicyVersion:
    namespace: str
    name: str
    version: int
    change: ChangeKind
    document: dict[str, Any]
    author: str
    comment: str
    created_at: datetime


@dataclass(frozen=True)
class FieldChange:
    """One difference between two documents, at a dotted path."""

    path: str
    op: str  # add | remove | replace
    old: Any = None
    new: Any = None


def diff_documents(old: Any, new: Any, path: str = "") -> list[FieldChange]:
    """Field-level differences, depth first, keys in sorted order."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[FieldChange] = []
        for key in sorted(old.keys() | new.keys()):
            child = f"{path}.{key}" if path else str(key)
            if key not in new:
                changes.append(FieldChange(child, "remove", old=old[key]))
            elif key not in old:
                changes.append(FieldChange(child, "add", new=new[key]))
            else:
                changes += diff_documents(old[key], new[key], child)
        return changes
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        changes = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            changes += diff_documents(a, b, f"{path}[{i}]")
        return changes
    return [] if old == new else [FieldChange(path, "replace", old=old, new=new)]


def unified_diff(old: dict[str, Any], new: dict[str, Any], old_label: str, new_label: str) -> str:
    """A unified diff of the two documents rendered as YAML."""
    return "".join(
        difflib.unified_diff(
            to_yaml(old).splitlines(keepends=True),
            to_yaml(new).splitlines(keepends=True),
            fromfile=old_label,
            tofile=new_label,
        )
    )


def to_yaml(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply a JSON Merge Patch (RFC 7386): objects merge, null deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged

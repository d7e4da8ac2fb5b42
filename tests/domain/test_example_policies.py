"""The example policies in policies/: each one is valid, reads a known metric preset, starts
in shadow mode, does not read another example's series, and is described in
docs/stacks.md, so that the examples and the guide per serving stack stay in step."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pdscaler.domain.policy import EnginePreset, Mode, Policy, Role, parse_policy
from pdscaler.metrics.presets import load_preset

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"
STACKS_DOC = REPO / "docs" / "stacks.md"
EXAMPLES = sorted(POLICIES.glob("*.yaml"))


def _documents(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def _policies() -> list[tuple[str, Policy]]:
    return [(path.name, parse_policy(doc)) for path in EXAMPLES for doc in _documents(path)]


def test_there_are_examples() -> None:
    assert EXAMPLES, f"no *.yaml in {POLICIES}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_each_example_is_a_valid_policy(path: Path) -> None:
    documents = _documents(path)

    assert len(documents) == 1, "one policy per example file"
    policy = parse_policy(documents[0])  # raises InvalidInput naming every bad field
    assert policy.spec.mode is Mode.SHADOW, "examples start in shadow mode (docs/policies.md)"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_each_example_reads_a_known_metric_preset(path: Path) -> None:
    engine = parse_policy(_documents(path)[0]).spec.engine

    if engine is not EnginePreset.CUSTOM:
        # Raises for an engine without a preset (trtllm: use dynamo behind Dynamo).
        load_preset(engine.value)


def test_examples_do_not_read_each_others_series() -> None:
    """A pool reads every series of its namespace that carries all the labels of its
    effective selector: the preset's role label, overridden or extended by
    metricsSelector. If one pool's selector is a subset of another's (same namespace,
    same engine), the first reads the second's series too: the mistake metrics.md warns
    of, which the examples must not teach."""
    pools: list[tuple[str, str, str, frozenset[tuple[str, str]]]] = []
    for name, policy in _policies():
        engine = policy.spec.engine
        role_label = None if engine is EnginePreset.CUSTOM else load_preset(engine.value).role_label
        for role in Role:
            labels = {role_label: role.value} if role_label else {}
            labels.update(policy.spec.pool(role).metrics_selector or {})
            where = f"{name} {role.value}"
            pools.append(
                (where, policy.metadata.namespace, engine.value, frozenset(labels.items()))
            )
    for i, (where, namespace, engine_name, selector) in enumerate(pools):
        for other, other_namespace, other_engine, other_selector in pools[i + 1 :]:
            if (namespace, engine_name) != (other_namespace, other_engine):
                continue
            assert not selector <= other_selector, f"{where} also reads the series of {other}"
            assert not other_selector <= selector, f"{other} also reads the series of {where}"


def test_example_policy_keys_are_unique() -> None:
    keys = [policy.key for _, policy in _policies()]

    assert len(keys) == len(set(keys))


def test_the_stacks_guide_mentions_every_example() -> None:
    text = STACKS_DOC.read_text(encoding="utf-8")

    missing = [path.name for path in EXAMPLES if f"policies/{path.name}" not in text]
    assert not missing, f"docs/stacks.md does not mention {missing}"


def test_the_stacks_guide_names_no_example_that_does_not_exist() -> None:
    text = STACKS_DOC.read_text(encoding="utf-8")

    named = set(re.findall(r"policies/([A-Za-z0-9_.-]+\.ya?ml)", text))
    unknown = named - {path.name for path in EXAMPLES}
    assert not unknown, f"docs/stacks.md names examples that do not exist: {sorted(unknown)}"

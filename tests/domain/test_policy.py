"""Policy validation: structural and semantic errors name the field that is wrong."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from pdscaler.domain.errors import InvalidInput
from pdscaler.domain.policy import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    Mode,
    Role,
    ScalingPolicyType,
    SelectPolicy,
    parse_policy,
)
from tests.factories import policy_doc


@dataclass(frozen=True)
class Invalid:
    name: str
    patch: dict[str, Any]
    field: str
    message: str  # a fragment of the message


INVALID = [
    Invalid("min above max", {"spec": {"decode": {"minReplicas": 20}}},
            "spec.decode.minReplicas", "must not exceed maxReplicas (20 > 16)"),
    Invalid("unknown metric type", {"spec": {"prefill": {"metrics": [{"type": "Vibes"}]}}},
            "spec.prefill.metrics[0].type", "Input should be"),
    Invalid("metric for the other role",
            {"spec": {"prefill": {"metrics": [{"type": "KVCacheUtilization", "target": 0.5}]}}},
            "spec.prefill.metrics[0].type", "cannot size a prefill pool"),
    Invalid("metric without its target",
            {"spec": {"prefill": {"metrics": [{"type": "QueuedPrefillTokens"}]}}},
            "spec.prefill.metrics[0].targetPerReplica", "is required"),
    Invalid("metric with a field of another type",
            {"spec": {"decode": {"metrics": [
                {"type": "KVCacheUtilization", "target": 0.5, "targetPerReplica": 3}]}}},
            "spec.decode.metrics[0].targetPerReplica", "does not apply"),
    Invalid("metric listed twice",
            {"spec": {"decode": {"metrics": [{"type": "KVCacheUtilization", "target": 0.5},
                                             {"type": "KVCacheUtilization", "target": 0.6}]}}},
            "spec.decode.metrics[1].type", "listed twice"),
    Invalid("utilisation target above 1",
            {"spec": {"decode": {"metrics": [{"type": "KVCacheUtilization", "target": 1.5}]}}},
            "spec.decode.metrics[0].target", "less than or equal to 1"),
    Invalid("TTFT without an SLO",
            {"spec": {"slo": {"ttftMs": None}, "prefill": {"metrics": [
                {"type": "TTFT", "quantile": 0.9}]}}},
            "spec.slo.ttftMs", "required by the TTFT metric"),
    Invalid("ratio band inverted",
            {"spec": {"coordination": {"prefillToDecodeRatio": {"min": 2, "max": 1}}}},
            "spec.coordination.prefillToDecodeRatio.min", "must not exceed max"),
    Invalid("ratio band unreachable",
            {"spec": {"decode": {"minReplicas": 10},
                      "coordination": {"prefillToDecodeRatio": {"min": 1, "max": 2}}}},
            "spec.coordination.prefillToDecodeRatio.min", "cannot be met"),
    Invalid("budget below the minimums",
            {"spec": {"prefill": {"minReplicas": 2, "gpusPerReplica": 4},
                      "coordination": {"gpuBudget": 8}}},
            "spec.coordination.gpuBudget", "below the 9 GPUs"),
    Invalid("unknown field", {"spec": {"prefill": {"maxReplica": 3}}},
            "spec.prefill.maxReplica", "unknown field"),
    Invalid("unknown top-level field", {"status": {"x": 1}}, "status", "unknown field"),
    Invalid("stabilization window out of range",
            {"spec": {"prefill": {"behavior": {"scaleDown": {
                "stabilizationWindowSeconds": 7200}}}}},
            "spec.prefill.behavior.scaleDown.stabilizationWindowSeconds", "3600"),
    Invalid("period out of range",
            {"spec": {"prefill": {"behavior": {"scaleUp": {"policies": [
                {"type": "Pods", "value": 1, "periodSeconds": 0}]}}}}},
            "spec.prefill.behavior.scaleUp.policies[0].periodSeconds", "greater than 0"),
    Invalid("empty policy list",
            {"spec": {"prefill": {"behavior": {"scaleUp": {"policies": []}}}}},
            "spec.prefill.behavior.scaleUp.policies", "at least one policy"),
    Invalid("cold start out of range", {"spec": {"coldStartSeconds": -1}},
            "spec.coldStartSeconds", "greater than or equal to 0"),
    Invalid("wrong type", {"spec": {"decode": {"maxReplicas": "many"}}},
            "spec.decode.maxReplicas", "valid integer"),
    Invalid("bad name", {"metadata": {"name": "Llama_8B"}}, "metadata.name", "pattern"),
    Invalid("same target twice",
            {"spec": {"decode": {"scaleTargetRef": {"name": "prefill"}}}},
            "spec.decode.scaleTargetRef", "different targets"),
    Invalid("a role on a kind without roles",
            {"spec": {"decode": {"scaleTargetRef": {"role": "decode"}}}},
            "spec.decode.scaleTargetRef", "role is only for StormService"),
    Invalid("a StormService without the role the pool is",
            {"spec": {"decode": {"scaleTargetRef": {
                "apiVersion": "orchestration.aibrix.ai/v1alpha1", "kind": "StormService"}}}},
            "spec.decode.scaleTargetRef", "set role"),
    Invalid("the same StormService role twice",
            {"spec": {role: {"scaleTargetRef": {
                "apiVersion": "orchestration.aibrix.ai/v1alpha1", "kind": "StormService",
                "name": "llama", "role": "decode"}} for role in ("prefill", "decode")}},
            "spec.decode.scaleTargetRef", "different targets"),
    Invalid("bad target apiVersion",
            {"spec": {"decode": {"scaleTargetRef": {"apiVersion": "apps/v1/extra"}}}},
            "spec.decode.scaleTargetRef.apiVersion", "group/version"),
    Invalid("wrong kind", {"kind": "HorizontalPodAutoscaler"}, "kind", "PDScalingPolicy"),
    Invalid("custom engine without queries", {"spec": {"engine": "custom"}}, "spec.queries",
            "required when engine is custom"),
    Invalid("queries for a preset engine",
            {"spec": {"queries": {"queuedRequests": "sum by ({{by}}) (x{{sel}})"}}},
            "spec.queries", "custom only"),
    Invalid("custom engine without pool selectors",
            {"spec": {"engine": "custom", "queries": {"queuedRequests":
                                                      "sum by ({{by}}) (x{{sel}})"}}},
            "spec.prefill.metricsSelector", "different selector for each pool"),
    Invalid("query with a placeholder pdscaler does not fill",
            {"spec": {"engine": "custom", "queries": {"queuedRequests":
                                                      "sum by ({{by}}) (x{{sel}}[{{window}}])"}}},
            "spec.queries.queuedRequests", "unknown placeholders ['window']"),
    Invalid("query for an unknown signal",
            {"spec": {"engine": "custom", "queries": {"vibes": "sum by ({{by}}) (x{{sel}})"}}},
            "spec.queries.vibes", "unknown signal"),
    Invalid("query without the pool selector",
            {"spec": {"engine": "custom", "queries": {"queuedRequests": "sum(x)"}}},
            "spec.queries.queuedRequests", "{{sel}}"),
    Invalid("capacity without a profile",
            {"spec": {"prefill": {"metrics": [{"type": "Capacity"}]}}},
            "spec.prefill.metrics[0].profile", "is required"),
    Invalid("fallback above max", {"spec": {"prefill": {"fallback": {"replicas": 9}}}},
            "spec.prefill.fallback.replicas", "within [minReplicas, maxReplicas] = [1, 8]"),
    Invalid("unknown priority", {"spec": {"coordination": {"priority": "router"}}},
            "spec.coordination.priority", "Input should be"),
    Invalid("negative guard margin", {"spec": {"slo": {"guardMargin": -0.1}}},
            "spec.slo.guardMargin", "greater than or equal to 0"),
    Invalid("unknown external-change action", {"spec": {"externalChanges": {"action": "fight"}}},
            "spec.externalChanges.action", "Input should be"),
]  # fmt: skip


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.name)
def test_invalid_policy_names_the_field(case: Invalid) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_policy(policy_doc(case.patch))

    fields = {e.field: e.message for e in raised.value.errors}
    assert case.field in fields, fields
    assert case.message in fields[case.field]


def test_every_problem_is_reported_at_once() -> None:
    doc = policy_doc({"spec": {"prefill": {"maxReplicas": 0, "bogus": True}}})

    with pytest.raises(InvalidInput) as raised:
        parse_policy(doc)

    assert {e.field for e in raised.value.errors} == {
        "spec.prefill.maxReplicas",
        "spec.prefill.bogus",
    }
    assert raised.value.message.startswith("invalid policy: spec.prefill.maxReplicas")


def test_non_object_document_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="must be an object"):
        parse_policy(["not", "a", "policy"])


def test_valid_policy_round_trips_through_its_document() -> None:
    policy = parse_policy(policy_doc({"spec": {"mode": "shadow"}}))

    assert policy.spec.mode is Mode.SHADOW
    assert parse_policy(policy.document()) == policy
    assert "resourceVersion" not in policy.document()["metadata"]


def test_behavior_defaults_are_hpa_v2_defaults() -> None:
    pool = parse_policy(policy_doc()).spec.prefill

    up, down = pool.scale_up_rules, pool.scale_down_rules

    assert up == DEFAULT_SCALE_UP
    assert up.stabilization_window_seconds == 0
    assert up.select_policy is SelectPolicy.MAX
    assert [(p.type, p.value, p.period_seconds) for p in up.policies or []] == [
        (ScalingPolicyType.PERCENT, 100, 15),
        (ScalingPolicyType.PODS, 4, 15),
    ]
    assert down == DEFAULT_SCALE_DOWN
    assert down.stabilization_window_seconds == 300
    assert [(p.type, p.value, p.period_seconds) for p in down.policies or []] == [
        (ScalingPolicyType.PERCENT, 100, 15)
    ]


def test_behavior_fields_left_out_take_hpa_defaults_one_by_one() -> None:
    doc = policy_doc({"spec": {"prefill": {"behavior": {"scaleDown": {"selectPolicy": "Min"}}}}})

    down = parse_policy(doc).spec.prefill.scale_down_rules

    assert down.select_policy is SelectPolicy.MIN
    assert down.stabilization_window_seconds == 300
    assert down.policies == DEFAULT_SCALE_DOWN.policies


def test_documents_use_camel_case_names_only() -> None:
    doc = policy_doc()
    doc["spec"]["cold_start_seconds"] = doc["spec"].pop("coldStartSeconds")

    with pytest.raises(InvalidInput) as raised:
        parse_policy(doc)

    assert raised.value.errors[0].field == "spec.cold_start_seconds"


def test_two_roles_of_one_stormservice_are_two_pools() -> None:
    ref = {"apiVersion": "orchestration.aibrix.ai/v1alpha1", "kind": "StormService",
           "name": "llama"}  # fmt: skip
    doc = policy_doc({"spec": {role: {"scaleTargetRef": {**ref, "role": role}}
                               for role in ("prefill", "decode")}})  # fmt: skip

    policy = parse_policy(doc)

    assert [policy.spec.pool(r).scale_target_ref.role for r in Role] == ["prefill", "decode"]

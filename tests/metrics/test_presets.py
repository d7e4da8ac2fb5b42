"""The presets are data: every one loads, and every template renders to PromQL."""

from __future__ import annotations

import pytest

from pdscaler.metrics.presets import ENGINES, load_preset, render

VALUES = {"sel": '{namespace=~"a"}', "match": 'namespace=~"a"', "by": "namespace",
          "w": "60s", "q": "0.9", "namespaces": "a"}  # fmt: skip


@pytest.mark.parametrize("engine", ENGINES)
def test_every_template_renders(engine: str) -> None:
    preset = load_preset(engine)
    names = {key: family.names[0] for key, family in preset.families.items()}

    for query in preset.signals.values():
        promql = render(query.template, {**VALUES, **names})

        assert "{{" not in promql
        assert promql.count("(") == promql.count(")"), promql
        assert query.doc


def test_vllm_knows_the_renamed_kv_usage_gauge() -> None:
    families = load_preset("vllm").families

    assert families["kv_usage"].names == ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
    assert families["itl"].names[-1] == "vllm:time_per_output_token_seconds"


def test_a_missing_value_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(KeyError, match="sel"):
        render("sum(x{{sel}})", {})


def test_unknown_engine() -> None:
    with pytest.raises(KeyError, match="no metric preset"):
        load_preset("trtllm")


def test_each_family_is_also_sought_under_its_underscore_spelling() -> None:
    kv = load_preset("vllm").families["kv_usage"]

    assert kv.candidates == (
        "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc",
        "vllm_kv_cache_usage_perc", "vllm_gpu_cache_usage_perc",
    )  # fmt: skip

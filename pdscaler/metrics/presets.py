"""Engine presets: which metric names mean what, as data (``presets/*.yaml``).

A preset names metric *families*, each with the names it has had (aliases, newest first),
and one PromQL template per signal. Templates are written once for all pools; rendering
fills in:

- ``{{family}}``   the family's name as found in Prometheus (see :mod:`probe`);
- ``{{sel}}``      a full selector ``{namespace=~"a|b",role=~"prefill|decode"}``;
- ``{{match}}``    the same matchers without braces, to merge into a selector;
- ``{{by}}``       the labels that tell pools apart (``namespace,role``);
- ``{{w}}``        the rate window; ``{{q}}`` a quantile; ``{{namespaces}}`` a regex.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pdscaler.domain.signals import SignalName

PRESET_DIR = Path(__file__).parent / "presets"
ENGINES = ("vllm", "sglang", "dynamo", "dcgm")
# A name no exporter uses: an optional family that is absent renders as this.
ABSENT = "pdscaler_absent_metric"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_STANDARD = frozenset({"sel", "match", "by", "w", "q", "namespaces"})


@dataclass(frozen=True)
class Family:
    key: str
    names: tuple[str, ...]  # newest first
    optional: bool = False

    @property
    def candidates(self) -> tuple[str, ...]:
        """The names to look for: ``names``, then each with its colons as underscores.

        prometheus_client, which vLLM and SGLang serve ``/metrics`` with, writes the colon
        as an underscore when a Prometheus 2.x scrapes it in the OpenMetrics format
        (prometheus/client_python#1177): ``vllm:num_requests_waiting`` then arrives as
        ``vllm_num_requests_waiting``.
        """
        underscored = tuple(n.replace(":", "_") for n in self.names if ":" in n)
        return self.names + tuple(n for n in underscored if n not in self.names)


@dataclass(frozen=True)
class SignalQuery:
    signal: SignalName
    template: str
    doc: str

    @property
    def families(self) -> frozenset[str]:
        return frozenset(_PLACEHOLDER.findall(self.template)) - _STANDARD


@dataclass(frozen=True)
class Preset:
    engine: str
    role_label: str | None
    families: Mapping[str, Family]
    freshness: str | None  # a gauge family every server exposes; its age grades the pool
    signals: Mapping[SignalName, SignalQuery]


@functools.cache
def load_preset(engine: str) -> Preset:
    """The preset of ``engine``, read once from ``presets/<engine>.yaml``."""
    path = PRESET_DIR / f"{engine}.yaml"
    if engine not in ENGINES or not path.is_file():
        raise KeyError(f"no metric preset for engine {engine!r}; known: {', '.join(ENGINES)}")
    raw: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    families = {key: _family(key, value) for key, value in raw["families"].items()}
    signals = {
        SignalName(name): SignalQuery(
            SignalName(name), " ".join(item["query"].split()), item["doc"]
        )
        for name, item in raw["signals"].items()
    }
    preset = Preset(raw["engine"], raw.get("roleLabel"), families, raw.get("freshness"), signals)
    _check(preset, path)
    return preset


def _family(key: str, value: Any) -> Family:
    if isinstance(value, dict):
        return Family(key, tuple(value["names"]), bool(value.get("optional", False)))
    return Family(key, tuple(value))


def _check(preset: Preset, path: Path) -> None:
    for query in preset.signals.values():
        unknown = query.families - preset.families.keys()
        if unknown:
            raise ValueError(f"{path}: {query.signal} uses unknown families {sorted(unknown)}")


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill the ``{{name}}`` placeholders of a template; every one must have a value."""

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"no value for {{{{{key}}}}} in {template!r}")
        return values[key]

    return _PLACEHOLDER.sub(fill, template)

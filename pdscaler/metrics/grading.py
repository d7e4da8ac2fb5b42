"""One written rule for each shape of Prometheus answer (see docs/metrics.md).

| answer for a pool                          | quality | used for scaling |
|--------------------------------------------|---------|------------------|
| one sample, finite, recent                 | fresh   | yes (0 included) |
| one sample older than ``stale_after``      | stale   | no               |
| no series for the pool (empty vector)      | empty   | no               |
| NaN or +/-Inf (e.g. a rate over nothing)   | nan     | no               |
| several series where one was expected      | error   | no; the label sets are named |
| the query failed (down, timeout, 4xx/5xx)  | error   | no               |
| the metric family is absent from Prometheus| empty   | no; "family missing" |
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pdscaler.domain.signals import Quality, Signal

Series = Mapping[str, Any]  # {"metric": {...labels}, "value": [unix_ts, "value"]}


def grade(
    series: Sequence[Series],
    sampled_at: datetime | None,
    now: datetime,
    stale_after_s: float,
) -> Signal:
    """The signal one pool gets from the series of one query that belong to it.

    ``sampled_at`` is the newest sample time of the pool's servers (from the freshness
    query); without it, the evaluation time of the answer stands in.
    """
    if not series:
        return Signal.missing(Quality.EMPTY)
    if len(series) > 1:
        labels = "; ".join(_labels(s) for s in series[:5])
        return Signal.missing(
            Quality.ERROR, f"{len(series)} series where one was expected: {labels}"
        )
    evaluated_at, raw = series[0]["value"]
    value = float(raw)
    at = sampled_at or datetime.fromtimestamp(float(evaluated_at), UTC)
    if not math.isfinite(value):
        return Signal(None, at, Quality.NAN, f"Prometheus answered {raw}")
    if (now - at).total_seconds() > stale_after_s:
        return Signal(
            value, at, Quality.STALE, f"newest sample is {(now - at).total_seconds():.0f} s old"
        )
    return Signal(value, at, Quality.FRESH)


def _labels(series: Series) -> str:
    metric = series.get("metric", {})
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(metric.items())) + "}"

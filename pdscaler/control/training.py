"""Forecasts trained from the past, not only from what the loop has seen since it started.

At start-up (and every half hour, for a replica that stood by while another one led) the
forecast job reads each forecast signal's history through the metrics source (range
queries, one value per loop interval) and gives it to the forecasters before any value
the loop itself learned.

Warming-up samples are left out: a pool whose replicas were all still starting (pending,
none ready, as the decision log recorded it at that tick) served nothing, and the zeros
it reported then are not the load that was offered. They are dropped from the history
given to the forecasters, as the loop itself drops them (see ``Controller._input``).
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from pdscaler.control.ports import Forecaster, HistorySource
from pdscaler.domain.policy import Policy, Role
from pdscaler.domain.signals import PoolKey, PoolQuery, SeriesKey, SignalName
from pdscaler.store.forecasts import ForecastModelRecord

log = logging.getLogger(__name__)

TRAIN_LOOKBACK = timedelta(hours=2)  # as much history as a forecaster keeps
TRAIN_EVERY = timedelta(minutes=30)


def warming(ready: int | None, pending: int | None) -> bool:
    """Replicas on their way and none ready: the pool serves nothing yet."""
    return bool(pending) and not ready


def seed_from_history(
    source: HistorySource,
    plans: Sequence[tuple[Policy, Forecaster]],
    signals: Sequence[SignalName],
    start: datetime,
    end: datetime,
    *,
    step: timedelta,
    warming_ticks: Iterable[tuple[PoolKey, datetime]] = (),
    shift: timedelta = timedelta(0),
) -> int:
    """Give each policy's forecaster the history of its pools' ``signals`` between
    ``start`` and ``end``, less the samples within ``step`` after a warming tick. Returns
    how many values were taken; their times are moved ``shift`` (wall time onto the
    loop's steady time). A signal whose history cannot be read is skipped (logged):
    the forecasters then learn it live, as they would without history."""
    left_out: dict[PoolKey, list[datetime]] = defaultdict(list)
    for key, at in warming_ticks:
        left_out[key].append(at)
    step_s = max(1, round(step.total_seconds()))
    by_forecaster: dict[int, tuple[Forecaster, list[PoolQuery]]] = {}
    for policy, forecaster in plans:
        queries = by_forecaster.setdefault(id(forecaster), (forecaster, []))[1]
        queries += [PoolQuery.of(policy, role) for role in Role]
    taken = 0
    for forecaster, queries in by_forecaster.values():
        for signal in signals:
            try:
                history = source.history(queries, signal, start, end, step_s)
            except Exception as e:  # no history: the forecasters learn live, as before
                log.warning("reading the history of %s failed: %s", signal.value, e)
                continue
            for key, points in history.items():
                ticks = sorted(left_out.get(key, ()))
                kept = [(at + shift, v) for at, v in points if not _within(at, ticks, step)]
                taken += forecaster.seed((key, signal), kept)
    return taken


def _within(at: datetime, ticks: Sequence[datetime], step: timedelta) -> bool:
    """Whether ``at`` falls within ``step`` after one of ``ticks`` (sorted)."""
    i = bisect_right(ticks, at)
    return i > 0 and at - ticks[i - 1] < step


def changed_models(
    plans: Sequence[tuple[Policy, Forecaster]],
    signals: Sequence[SignalName],
    recorded: dict[SeriesKey, object],
    now: datetime,
) -> list[ForecastModelRecord]:
    """The series whose model was fitted or chosen since ``recorded`` says (which is
    updated): what to write to the forecast models table."""
    records = []
    for policy, forecaster in plans:
        for role in Role:
            for name in signals:
                series = (PoolKey(policy.metadata.namespace, policy.metadata.name, role), name)
                about = dict(forecaster.describe(series))
                fitted = about.get("fittedAt")
                mark = (about.get("model"), fitted, about.get("choiceAt"))
                if fitted is None or recorded.get(series) == mark:
                    continue
                recorded[series] = mark
                records.append(ForecastModelRecord(
                    series[0], name.value, str(about.get("model")),
                    datetime.fromisoformat(str(fitted)), now, about,
                ))  # fmt: skip
    return records

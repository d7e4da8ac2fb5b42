"""The cleaning rule, and the features the regression models read."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from pdscaler.forecast.series import clean, context_steps, features

NAN, INF = math.nan, math.inf


@dataclass(frozen=True)
class CleanCase:
    name: str
    times: list[float]
    values: list[float]
    expected_times: list[float]
    expected_values: list[float]


CLEAN = [
    CleanCase("a regular series is kept as it is",
              [0, 5, 10], [1, 2, 3], [0, 5, 10], [1, 2, 3]),
    CleanCase("NaN, Inf and negative values are missing, and short gaps filled",
              [0, 5, 10, 15, 20], [1, NAN, INF, -2, 5], [0, 5, 10, 15, 20], [1, 1, 1, 1, 5]),
    CleanCase("-Inf is missing too",
              [0, 5, 10], [1, -INF, 3], [0, 5, 10], [1, 1, 3]),
    CleanCase("a missing step (a skipped tick) takes the last value",
              [0, 5, 15], [1, 2, 4], [0, 5, 10, 15], [1, 2, 2, 4]),
    CleanCase("30 s of missing steps are filled",
              [0, 35], [1, 2], [0, 5, 10, 15, 20, 25, 30, 35], [1, 1, 1, 1, 1, 1, 1, 2]),
    CleanCase("a longer gap cuts the series: only what follows is kept",
              [0, 5, 45, 50], [1, 2, 3, 4], [45, 50], [3, 4]),
    CleanCase("a run of NaN longer than 30 s cuts it as well",
              [0, 5, 10, 15, 20, 25, 30, 35, 40, 45], [1, NAN, NAN, NAN, NAN, NAN, NAN, NAN, 3, 4],
              [40, 45], [3, 4]),
    CleanCase("points between steps go to the nearest; of two on one step the later counts",
              [0.2, 4.1, 5.9, 10.0], [1, 2, 3, 4], [0, 5, 10], [1, 3, 4]),
    CleanCase("leading missing values are dropped", [0, 5, 10], [NAN, 2, 3], [5, 10], [2, 3]),
    CleanCase("only NaN: nothing is left", [0, 5], [NAN, NAN], [], []),
    CleanCase("nothing in, nothing out", [], [], [], []),
]  # fmt: skip


@pytest.mark.parametrize("case", CLEAN, ids=lambda c: c.name)
def test_the_cleaning_rule(case: CleanCase) -> None:
    times, values = clean(case.times, case.values, step_s=5.0)

    assert times.tolist() == case.expected_times
    assert values.tolist() == case.expected_values


def test_cleaning_refuses_arrays_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="one length"):
        clean([0, 5], [1], step_s=5.0)


def test_features_are_the_lags_then_each_windows_mean_and_deviation() -> None:
    values = np.array([1.0, 2, 3, 4, 5, 6])
    times = np.array([0.0, 5, 10, 15, 20, 25])

    rows = features(times, values, lags=2, windows=[3], calendar=False)

    assert context_steps(2, [3]) == 3
    # one row per origin from the third value on: [y_t, y_t-1, mean of 3, std of 3]
    expected_std = float(np.std([1.0, 2, 3]))
    np.testing.assert_allclose(
        rows,
        [[3, 2, 2, expected_std], [4, 3, 3, expected_std],
         [5, 4, 4, expected_std], [6, 5, 5, expected_std]],
    )  # fmt: skip


def test_the_calendar_terms_are_the_time_of_day_and_of_the_week() -> None:
    # 1970-01-05 06:00 UTC: a Monday, a quarter through the day
    at = 4 * 86_400.0 + 6 * 3600.0

    row = features(np.array([at]), np.array([1.0]), lags=1, windows=[], calendar=True)[0]

    day_sin, day_cos, week_sin, week_cos = row[1:]
    assert (day_sin, day_cos) == pytest.approx((1.0, 0.0), abs=1e-12)
    # Monday 06:00 is 0.25 days into the week
    assert (week_sin, week_cos) == pytest.approx(
        (math.sin(2 * math.pi * 0.25 / 7), math.cos(2 * math.pi * 0.25 / 7))
    )

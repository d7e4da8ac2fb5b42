"""Request traces: loading both formats, bad files, and the load transformations."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from importlib.resources import files
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from pdscaler.sim.traces import (
    Request,
    TraceError,
    concat,
    load_trace,
    scale_rate,
    span_s,
    time_scale,
    window,
)

# The repository and shared/ are siblings (CI copies shared/ beside the clone).
TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "traces"
AZURE_CONV = TRACES / "AzureLLMInferenceTrace_conv.csv"
BUNDLED = Path(str(files("pdscaler.sim") / "data" / "azure-conv-10min.csv"))


def per_minute(trace: Sequence[Request], minutes: int) -> np.ndarray:
    counts = Counter(int(r.arrival_s // 60) for r in trace)
    return np.array([counts[m] for m in range(minutes)])


def is_sorted(trace: Sequence[Request]) -> bool:
    return all(a.arrival_s <= b.arrival_s for a, b in pairwise(trace))


@pytest.fixture(scope="module")
def azure() -> list[Request]:
    return load_trace(AZURE_CONV)


# -- the shared trace files ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "rows", "span", "first"),
    [
        ("AzureLLMInferenceTrace_conv.csv", 19_366, 3501.72, (374, 44)),
        ("conversation_trace.jsonl", 12_031, 3536.999, (6758, 500)),
        ("synthetic_trace.jsonl", 3_993, 1022.025, (40160, 6)),
    ],
)
def test_a_trace_file_loads_every_row_in_arrival_order_from_zero(
    file: str, rows: int, span: float, first: tuple[int, int]
) -> None:
    trace = load_trace(TRACES / file)

    assert len(trace) == rows
    assert trace[0].arrival_s == 0.0
    assert is_sorted(trace)
    assert span_s(trace) == pytest.approx(span, abs=0.01)
    assert (trace[0].input_tokens, trace[0].output_tokens) == first
    assert all(r.input_tokens >= 1 and r.output_tokens >= 1 for r in trace)


def test_a_csv_trace_is_sorted_and_starts_at_zero(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_bytes(
        b"TIMESTAMP,ContextTokens,GeneratedTokens\r\n"
        b"2023-11-16 18:15:50.5000000,200,20\r\n"
        b"2023-11-16 18:15:48.2500000,100,10\r\n"
        b"2023-11-16 18:16:48.2500000,300,30\r\n"
    )

    trace = load_trace(path)

    assert trace == [Request(0.0, 100, 10), Request(2.25, 200, 20), Request(60.0, 300, 30)]


def test_a_jsonl_trace_is_sorted_and_starts_at_zero(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    path.write_text(
        '{"timestamp": 2500, "input_length": 200, "output_length": 20}\n'
        "\n"
        '{"timestamp": 1000, "input_length": 100, "output_length": 10, "hash_ids": [0, 1]}\n'
        '{"timestamp": 61000, "input_length": 300, "output_length": 30}\n'
    )

    trace = load_trace(path)

    assert trace == [Request(0.0, 100, 10), Request(1.5, 200, 20), Request(60.0, 300, 30)]


# -- bad files -----------------------------------------------------------------------------

CSV_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
CSV_ROW = "2023-11-16 18:15:46.6805900,374,44\n"
JSON_ROW = '{"timestamp": 0, "input_length": 10, "output_length": 5}\n'


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        ("trace.csv", CSV_HEADER + CSV_ROW + "2023-11-16 18:15:47,x,44\n", 3),
        ("trace.csv", CSV_HEADER + CSV_ROW + CSV_ROW + "2023-11-16 18:15:47,10,0\n", 4),
        ("trace.csv", CSV_HEADER + "yesterday,10,5\n", 2),
        ("trace.csv", CSV_HEADER + CSV_ROW + "2023-11-16 18:15:47,10\n", 3),
        ("trace.jsonl", JSON_ROW + "{not json\n", 2),
        ("trace.jsonl", JSON_ROW + JSON_ROW + '{"timestamp": 5, "input_length": 10}\n', 3),
        ("trace.jsonl", JSON_ROW + '{"timestamp": 5, "input_length": -1, "output_length": 1}\n', 2),
        ("trace.jsonl", JSON_ROW + "\n" + '["timestamp", 5]\n', 3),
    ],
    ids=[
        "csv-token-not-a-number",
        "csv-zero-output",
        "csv-bad-timestamp",
        "csv-short-row",
        "jsonl-not-json",
        "jsonl-missing-field",
        "jsonl-negative-length",
        "jsonl-not-an-object",
    ],
)
def test_a_bad_row_is_named_by_file_and_line(
    tmp_path: Path, name: str, text: str, line: int
) -> None:
    path = tmp_path / name
    path.write_text(text)

    with pytest.raises(TraceError, match=re.escape(f"{path}:{line}:")):
        load_trace(path)


def test_a_bad_csv_row_after_a_blank_line_is_named_by_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(CSV_HEADER + CSV_ROW + "\n" + "2023-11-16 18:15:47,x,44\n")

    with pytest.raises(TraceError, match=re.escape(f"{path}:4:")):
        load_trace(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "needs the columns"),
        (CSV_HEADER, "no requests"),
        ("\n\n", "needs the columns"),
        ("time,input,output\n1,2,3\n", "needs the columns"),
    ],
    ids=["empty", "header-only", "blank-lines", "wrong-columns"],
)
def test_a_file_without_usable_requests_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(text)

    with pytest.raises(TraceError, match=re.escape(str(path)) + ".*" + message):
        load_trace(path)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.csv"

    with pytest.raises(TraceError, match=re.escape(str(path))):
        load_trace(path)


@pytest.fixture
def us_eastern_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local zone has a daylight-saving change (US Eastern, 5 November 2023)."""
    monkeypatch.setenv("TZ", "EST5EDT,M3.2.0,M11.1.0")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("us_eastern_local_time")
def test_csv_arrivals_do_not_depend_on_the_local_time_zone(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(CSV_HEADER + "2023-11-05 01:59:00.0000000,10,5\n2023-11-05 02:01:00,10,5\n")

    trace = load_trace(path)

    assert [r.arrival_s for r in trace] == [0.0, 120.0]


# -- changing the load ---------------------------------------------------------------------


@pytest.mark.parametrize("factor", [0.5, 1, 2.5, 10])
def test_scale_rate_multiplies_the_count_over_the_same_span(
    azure: list[Request], factor: float
) -> None:
    scaled = scale_rate(azure, factor)

    assert abs(len(scaled) - factor * len(azure)) <= 1
    assert is_sorted(scaled)
    assert scaled[0].arrival_s < 5.0
    assert span_s(scaled) == pytest.approx(span_s(azure), rel=0.01)


@pytest.mark.parametrize("factor", [0.5, 1, 2.5, 10])
def test_scale_rate_keeps_the_shape_of_the_load(azure: list[Request], factor: float) -> None:
    minutes = int(span_s(azure) // 60) + 1
    before = per_minute(azure, minutes)

    after = per_minute(scale_rate(azure, factor), minutes + 1)

    assert after[minutes] == 0  # nothing spills past the trace's last minute
    after = after[:minutes]
    assert np.corrcoef(before, after)[0, 1] > 0.99
    assert after.argmax() == before.argmax()
    assert after.argmin() == before.argmin()
    assert after.sum() == pytest.approx(factor * before.sum(), abs=1)


def test_scale_rate_by_one_is_the_trace_itself(azure: list[Request]) -> None:
    assert scale_rate(azure, 1) == azure


def test_scale_rate_by_a_whole_number_repeats_every_request(azure: list[Request]) -> None:
    def lengths(trace: Sequence[Request]) -> Counter[tuple[int, int]]:
        return Counter((r.input_tokens, r.output_tokens) for r in trace)

    scaled = scale_rate(azure[:500], 3)

    assert lengths(scaled) == Counter({k: 3 * v for k, v in lengths(azure[:500]).items()})


@pytest.mark.parametrize("factor", [0, -1, float("inf"), float("nan")])
def test_scale_rate_refuses_a_factor_that_is_not_positive_and_finite(factor: float) -> None:
    with pytest.raises(ValueError, match="rate factor"):
        scale_rate([Request(0.0, 10, 5)], factor)


def test_time_scale_compresses_arrivals_and_keeps_the_requests() -> None:
    trace = [Request(0.0, 10, 5), Request(3.0, 20, 6), Request(9.0, 30, 7)]

    assert time_scale(trace, 3) == [Request(0.0, 10, 5), Request(1.0, 20, 6), Request(3.0, 30, 7)]
    assert time_scale(trace, 0.5) == [
        Request(0.0, 10, 5),
        Request(6.0, 20, 6),
        Request(18.0, 30, 7),
    ]


@pytest.mark.parametrize("speed", [0, -2])
def test_time_scale_refuses_a_speed_that_is_not_positive(speed: float) -> None:
    with pytest.raises(ValueError, match="speed"):
        time_scale([Request(0.0, 10, 5)], speed)


def test_window_keeps_the_half_open_interval_with_its_start_at_zero() -> None:
    trace = [Request(float(t), 10 + t, 5) for t in range(6)]

    kept = window(trace, 1.5, 4.0)

    assert kept == [Request(0.5, 12, 5), Request(1.5, 13, 5)]
    assert window(trace, 2.0, 4.0) == [Request(0.0, 12, 5), Request(1.0, 13, 5)]
    assert window(trace, 10.0, 20.0) == []


def test_five_minutes_of_a_trace_are_the_requests_of_those_minutes(
    azure: list[Request],
) -> None:
    minute = per_minute(azure, 10)

    kept = window(azure, 120.0, 420.0)

    assert len(kept) == minute[2:7].sum()
    assert kept[0].arrival_s >= 0.0
    assert kept[-1].arrival_s < 300.0
    assert is_sorted(kept)


def test_concat_starts_each_trace_a_gap_after_the_last_arrival_of_the_one_before() -> None:
    first = [Request(0.0, 1, 1), Request(4.0, 2, 1)]
    second = [Request(0.0, 3, 1), Request(1.0, 4, 1)]

    assert concat([first, [], second], gap_s=10.0) == [
        Request(0.0, 1, 1),
        Request(4.0, 2, 1),
        Request(14.0, 3, 1),
        Request(15.0, 4, 1),
    ]
    assert [r.arrival_s for r in concat([first, second])] == [0.0, 4.0, 4.0, 5.0]
    assert concat([]) == []


# -- the bundled trace ---------------------------------------------------------------------


def test_the_bundled_trace_is_the_first_ten_minutes_of_azure_conv(azure: list[Request]) -> None:
    bundled = load_trace(BUNDLED)

    assert len(bundled) == 2_867
    assert bundled == window(azure, 0.0, 600.0)
    assert span_s(bundled) < 600.0


def test_the_bundled_trace_is_a_byte_for_byte_cut_with_its_attribution() -> None:
    cut = BUNDLED.read_bytes()

    assert AZURE_CONV.read_bytes().startswith(cut)
    assert cut.endswith(b"\r\n")
    notice = (BUNDLED.parent / "LICENSE").read_text()
    assert "https://creativecommons.org/licenses/by/4.0/legalcode" in notice
    assert "Splitwise" in notice
    assert "Azure/AzurePublicDataset" in (BUNDLED.parent / "README.md").read_text()

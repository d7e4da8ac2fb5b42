"""Request traces: per-request arrival time, input tokens and output tokens.

Two formats are read, told apart by the file's first character: the Azure LLM inference
traces (CSV with ``TIMESTAMP``, ``ContextTokens``, ``GeneratedTokens``; timestamps are
wall-clock date-times) and the Mooncake traces (JSON Lines with ``timestamp`` in
milliseconds from the trace's start, ``input_length``, ``output_length``). Either way the
result is a list of :class:`Request` in arrival order, the first arriving at 0 s.

Load is changed two ways. :func:`scale_rate` multiplies the request rate by a factor over
the same span, keeping the trace's shape: the trace is laid over itself (each copy shifted
by a fraction of a second) and thinned evenly to the wanted count. :func:`time_scale`
compresses or stretches time without changing which requests there are. :func:`concat`
joins traces one after the other; :func:`window` keeps a slice of time.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple


class Request(NamedTuple):
    arrival_s: float
    input_tokens: int
    output_tokens: int


class TraceError(ValueError):
    """A trace file that cannot be read; the message names the file and the line."""


def load_trace(path: Path | str) -> list[Request]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise TraceError(f"{path}: {e.strerror or e}") from e
    first = text.lstrip()[:1]
    requests = _jsonl(path, text) if first == "{" else _csv(path, text)
    if not requests:
        raise TraceError(f"{path}: no requests")
    requests.sort(key=lambda r: r.arrival_s)
    start = requests[0].arrival_s
    return [r._replace(arrival_s=r.arrival_s - start) for r in requests]


def scale_rate(trace: Sequence[Request], factor: float) -> list[Request]:
    """``factor`` times the request rate over the same span (``factor`` > 0).

    The trace is laid over itself ``ceil(factor)`` times, copy ``k`` shifted by ``k / copies``
    seconds, then thinned evenly to ``factor`` times the original count: the shape of the
    load (its bursts and lulls) is kept and only its height changes.
    """
    if not factor > 0 or not math.isfinite(factor):
        raise ValueError(f"the rate factor must be positive, got {factor}")
    copies = math.ceil(factor)
    layered = sorted(
        (r._replace(arrival_s=r.arrival_s + k / copies) for k in range(copies) for r in trace),
        key=lambda r: r.arrival_s,
    )
    keep = factor / copies
    kept, credit = [], 0.0
    for request in layered:
        credit += keep
        if credit >= 1.0 - 1e-9:
            credit -= 1.0
            kept.append(request)
    return kept


def time_scale(trace: Sequence[Request], speed: float) -> list[Request]:
    """The same requests, arriving ``speed`` times faster (``speed`` > 0)."""
    if not speed > 0:
        raise ValueError(f"the speed must be positive, got {speed}")
    return [r._replace(arrival_s=r.arrival_s / speed) for r in trace]


def window(trace: Sequence[Request], start_s: float, end_s: float) -> list[Request]:
    """The requests arriving in [start_s, end_s), with the window's start at 0 s."""
    return [r._replace(arrival_s=r.arrival_s - start_s) for r in trace
            if start_s <= r.arrival_s < end_s]  # fmt: skip


def concat(traces: Iterable[Sequence[Request]], gap_s: float = 0.0) -> list[Request]:
    """One trace after the other, each starting ``gap_s`` after the previous one's last."""
    joined: list[Request] = []
    offset = 0.0
    for trace in traces:
        joined += [r._replace(arrival_s=r.arrival_s + offset) for r in trace]
        if joined:
            offset = joined[-1].arrival_s + gap_s
    return joined


def span_s(trace: Sequence[Request]) -> float:
    return trace[-1].arrival_s - trace[0].arrival_s if trace else 0.0


def _csv(path: Path, text: str) -> list[Request]:
    reader = csv.DictReader(text.splitlines())
    wanted = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"}
    if not wanted <= set(reader.fieldnames or ()):
        raise TraceError(f"{path}: a CSV trace needs the columns {sorted(wanted)}")
    requests = []
    for row in reader:
        line = reader.line_num
        try:
            # The Azure traces' times carry no zone: read them as UTC, whatever the local
            # zone (a daylight-saving change must not open a gap in the trace).
            at = datetime.fromisoformat(row["TIMESTAMP"][:26]).replace(tzinfo=UTC).timestamp()
            requests.append(_request(at, row["ContextTokens"], row["GeneratedTokens"]))
        except (ValueError, TypeError) as e:
            raise TraceError(f"{path}:{line}: {e}") from e
    return requests


def _jsonl(path: Path, text: str) -> list[Request]:
    requests = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
            requests.append(
                _request(row["timestamp"] / 1000.0, row["input_length"], row["output_length"])
            )
        except (ValueError, TypeError, KeyError) as e:
            raise TraceError(f"{path}:{line}: {e!r}") from e
    return requests


def _request(at: float, input_tokens: object, output_tokens: object) -> Request:
    isl, osl = int(str(input_tokens)), int(str(output_tokens))
    if isl < 1 or osl < 1 or not math.isfinite(at):
        raise ValueError(f"needs positive token counts, got {isl} in / {osl} out")
    return Request(float(at), isl, osl)

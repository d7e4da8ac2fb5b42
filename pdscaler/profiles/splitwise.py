"""Read SplitwiseSim's ``perf_model.csv`` (Splitwise, ISCA 2024) into a PerfProfile.

The file has about five repeated runs per configuration, with one-dimensional sweeps
around (prompt 512, batch 1, output 128): prompt sizes at batch 1, output sizes at batch 1,
and batch sizes. Times are in ms: ``prompt_time`` prefills the whole batch,
``token_time`` is the mean decode iteration.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from statistics import median

from pdscaler.domain.profile import DecodePoint, PerfProfile, PrefillPoint, ProfileError

COLUMNS = (
    "model",
    "hardware",
    "tensor_parallel",
    "prompt_size",
    "batch_size",
    "token_size",
    "prompt_time",
    "token_time",
)
# A batch is dropped as a failed run when it prefills faster than this many times the best
# single-prompt prefill rate of its configuration (see _plausible).
MAX_BATCH_PREFILL_SPEEDUP = 2.0

# (prompt_size, batch_size, token_size) -> the runs' (prompt_time, token_time), in ms
Runs = dict[tuple[int, int, int], list[tuple[float, float]]]


def load_splitwise(
    csv_path: Path, *, model: str, hardware: str, tensor_parallel: int
) -> PerfProfile:
    """The PerfProfile of one (model, hardware, tensor_parallel) replica of perf_model.csv.

    Prefill points: the median ``prompt_time`` of the batch-1 runs of each prompt size.
    Decode points: the batch sweeps, one curve per (prompt, output) size with runs at more
    than one batch size; per batch the median ``token_time`` is the ITL, concurrency is the
    batch size, context = prompt + output / 2 (the mean over a request's decode) and
    tokens/s = batch / ITL × 1000. ``max_kv_tokens`` is unknown (None). Batches that fail
    :func:`_plausible` are left out. Raises :class:`ProfileError` naming the file and what
    is wrong.
    """
    runs = _read_runs(csv_path, model, hardware, tensor_parallel)
    prefill = _prefill_points(runs)
    if not prefill:
        raise ProfileError(f"{csv_path}: no batch-1 runs for {model} on {hardware}")
    best_prefill_tokens_per_s = max(p.isl_tokens / p.ttft_ms * 1000.0 for p in prefill)
    decode = _decode_points(runs, best_prefill_tokens_per_s)
    try:
        return PerfProfile(
            name=f"splitwise-{model}-{hardware}-tp{tensor_parallel}",
            prefill=prefill,
            decode=decode,
            max_kv_tokens=None,
            source=f"Splitwise perf_model.csv {csv_path}: {model}, {hardware}, TP{tensor_parallel}",
        )
    except ValueError as e:
        raise ProfileError(f"{csv_path}: {e}") from e


def _read_runs(csv_path: Path, model: str, hardware: str, tensor_parallel: int) -> Runs:
    """The runs of one configuration, keyed by (prompt, batch, output) size."""
    try:
        with csv_path.open(newline="") as file:
            reader = csv.DictReader(file)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise ProfileError(f"{csv_path}: missing columns {', '.join(missing)}")
            wanted = (model, hardware, str(tensor_parallel))
            runs: Runs = defaultdict(list)
            configurations: set[tuple[str, str, str]] = set()
            for row in reader:
                configuration = (row["model"], row["hardware"], row["tensor_parallel"])
                configurations.add(configuration)
                if configuration == wanted:
                    key, times = _parse(csv_path, reader.line_num, row)
                    runs[key].append(times)
    except OSError as e:
        raise ProfileError(f"{csv_path}: cannot read it: {e}") from e
    if not runs:
        known = ", ".join(f"{m}/{h}/TP{t}" for m, h, t in sorted(configurations))
        raise ProfileError(
            f"{csv_path}: no runs for {model}/{hardware}/TP{tensor_parallel} (has {known})"
        )
    return runs


def _parse(
    csv_path: Path, line: int, row: dict[str, str]
) -> tuple[tuple[int, int, int], tuple[float, float]]:
    try:
        key = (int(row["prompt_size"]), int(row["batch_size"]), int(row["token_size"]))
        return key, (float(row["prompt_time"]), float(row["token_time"]))
    except ValueError as e:
        raise ProfileError(f"{csv_path}, line {line}: not a number: {e}") from e


def _prefill_points(runs: Runs) -> tuple[PrefillPoint, ...]:
    by_prompt: dict[int, list[float]] = defaultdict(list)
    for (prompt, batch, _), times in runs.items():
        if batch == 1:
            by_prompt[prompt] += [prompt_ms for prompt_ms, _ in times]
    return tuple(
        PrefillPoint(float(prompt), median(by_prompt[prompt])) for prompt in sorted(by_prompt)
    )


def _decode_points(runs: Runs, best_prefill_tokens_per_s: float) -> tuple[DecodePoint, ...]:
    swept = {(prompt, output) for prompt, batch, output in runs if batch > 1}
    points = []
    for (prompt, batch, output), times in runs.items():
        if (prompt, output) not in swept or not _plausible(
            prompt, batch, times, best_prefill_tokens_per_s
        ):
            continue
        itl_ms = median(token_ms for _, token_ms in times)
        points.append(
            DecodePoint(
                context_tokens=prompt + output / 2,
                concurrency=float(batch),
                itl_ms=itl_ms,
                tokens_per_s=batch / itl_ms * 1000.0,
            )
        )
    return tuple(sorted(points, key=lambda p: (p.context_tokens, p.concurrency)))


def _plausible(
    prompt: int, batch: int, times: list[tuple[float, float]], best_prefill_tokens_per_s: float
) -> bool:
    """Whether a batch's runs look like a successful measurement.

    Prefilling a batch cannot be much faster per token than the most efficient single
    prompt: a long prompt already keeps the GPUs busy. A batch whose median prefill rate
    exceeds :data:`MAX_BATCH_PREFILL_SPEEDUP` times the best single-prompt rate is a failed
    run, and its decode times are not trusted either. In perf_model.csv this drops exactly
    the batch-64 runs of llama2-70b at TP2 (about 14 times the best single-prompt rate, and
    decoding faster than batch 32); every other batch is within 1.06 times.
    """
    prefill_tokens_per_s = prompt * batch / median(p for p, _ in times) * 1000.0
    return prefill_tokens_per_s <= MAX_BATCH_PREFILL_SPEEDUP * best_prefill_tokens_per_s

"""Read the output of NVIDIA Dynamo's pre-deployment profiler (``profile_sla``).

A profile directory holds two NumPy archives, in the layout Dynamo's SLA planner reads::

    selected_prefill_interpolation/raw_data.npz   prefill_isl, prefill_ttft (ms)
    selected_decode_interpolation/raw_data.npz    x_kv_usage, y_context_length, z_itl (ms),
                                                  z_thpt_per_gpu, max_kv_tokens
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pdscaler.domain.profile import DecodePoint, PerfProfile, PrefillPoint, ProfileError

PREFILL_FILE = Path("selected_prefill_interpolation") / "raw_data.npz"
DECODE_FILE = Path("selected_decode_interpolation") / "raw_data.npz"
PREFILL_KEYS = ("prefill_isl", "prefill_ttft")
DECODE_KEYS = ("x_kv_usage", "y_context_length", "z_itl", "z_thpt_per_gpu", "max_kv_tokens")

Arrays = Mapping[str, npt.NDArray[np.float64]]


def load_dynamo(directory: Path, name: str | None = None, *, gpus: int = 1) -> PerfProfile:
    """The PerfProfile of one replica from a Dynamo profile directory.

    ``gpus`` is the number of GPUs of one replica (its tensor-parallel size; a TP1 profile is
    1): Dynamo reports decode throughput per GPU, the profile holds it per replica.
    Concurrency is ``x_kv_usage · max_kv_tokens / y_context_length``. The name defaults to
    the directory's name. Raises :class:`ProfileError` naming the file and what is missing
    or wrong.
    """
    if gpus < 1:
        raise ProfileError(f"{directory}: gpus per replica must be at least 1, got {gpus}")
    prefill = _read_npz(directory / PREFILL_FILE, PREFILL_KEYS)
    _require_same_length(directory / PREFILL_FILE, prefill, PREFILL_KEYS)
    decode = _read_npz(directory / DECODE_FILE, DECODE_KEYS)
    _require_same_length(directory / DECODE_FILE, decode, DECODE_KEYS[:-1])
    max_kv = decode["max_kv_tokens"]
    if max_kv.size != 1:
        raise ProfileError(
            f"{directory / DECODE_FILE}: max_kv_tokens must hold one value, has {max_kv.size}"
        )
    max_kv_tokens = int(max_kv[0])
    try:
        return PerfProfile(
            name=name or directory.name,
            prefill=_prefill_points(prefill),
            decode=_decode_points(decode, max_kv_tokens, gpus),
            max_kv_tokens=max_kv_tokens,
            source=f"Dynamo profile_sla output in {directory} ({gpus} GPU per replica)",
        )
    except ValueError as e:
        raise ProfileError(f"{directory}: {e}") from e


def _read_npz(path: Path, keys: Sequence[str]) -> Arrays:
    """The named arrays of an .npz file, flattened to float64; ProfileError if absent."""
    if not path.is_file():
        raise ProfileError(
            f"{path}: no such file (a Dynamo profile directory holds {PREFILL_FILE} "
            f"and {DECODE_FILE})"
        )
    try:
        # allow_pickle=False: a profile is data; a pickled object array could run code.
        with np.load(path, allow_pickle=False) as archive:
            found = list(archive.files)
            arrays = {
                key: np.asarray(archive[key], dtype=np.float64).ravel()
                for key in keys
                if key in found
            }
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ProfileError(f"{path}: cannot read it as a NumPy .npz archive of numbers: {e}") from e
    missing = [key for key in keys if key not in arrays]
    if missing:
        raise ProfileError(f"{path}: missing arrays {', '.join(missing)} (has {', '.join(found)})")
    return arrays


def _prefill_points(arrays: Arrays) -> tuple[PrefillPoint, ...]:
    isl, ttft = arrays["prefill_isl"], arrays["prefill_ttft"]
    order = np.argsort(isl, kind="stable")
    return tuple(PrefillPoint(float(isl[i]), float(ttft[i])) for i in order)


def _decode_points(arrays: Arrays, max_kv_tokens: int, gpus: int) -> tuple[DecodePoint, ...]:
    kv_usage, context = arrays["x_kv_usage"], arrays["y_context_length"]
    itl, tokens_per_s_per_gpu = arrays["z_itl"], arrays["z_thpt_per_gpu"]
    concurrency = kv_usage * max_kv_tokens / context
    order = np.lexsort((concurrency, context))
    return tuple(
        DecodePoint(
            context_tokens=float(context[i]),
            concurrency=float(concurrency[i]),
            itl_ms=float(itl[i]),
            tokens_per_s=float(tokens_per_s_per_gpu[i]) * gpus,
        )
        for i in order
    )


def _require_same_length(path: Path, arrays: Arrays, keys: Sequence[str]) -> None:
    lengths = {key: arrays[key].size for key in keys}
    if len(set(lengths.values())) != 1:
        raise ProfileError(f"{path}: arrays differ in length: {lengths}")

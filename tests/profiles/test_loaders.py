"""Profile loaders: Dynamo's profiler output, Splitwise's perf_model.csv, bundled profiles."""

from __future__ import annotations

import csv
import filecmp
import shutil
from pathlib import Path

import numpy as np
import pytest

from pdscaler.domain.profile import PerfProfile
from pdscaler.profiles import (
    BUNDLED_PROFILES,
    DEFAULT_PROFILE,
    ProfileError,
    bundled_profile_dir,
    load_dynamo,
    load_profile,
    load_splitwise,
)
from pdscaler.profiles.dynamo import DECODE_FILE, PREFILL_FILE

# The repository and shared/ are siblings (CI copies shared/ beside the clone).
PERF = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "perf"
DYNAMO = PERF / "dynamo" / "H200_TP1P_TP1D"
SPLITWISE = PERF / "splitwise-sim" / "perf_model.csv"
DERIVED = PERF / "derived"


def derived_rows(name: str) -> list[dict[str, str]]:
    with (DERIVED / name).open(newline="") as file:
        return list(csv.DictReader(file))


def test_dynamo_profile_matches_the_derived_tables() -> None:
    profile = load_dynamo(DYNAMO)

    prefill = derived_rows("dynamo_h200_llama31_8b_fp8_tp1_prefill.csv")
    decode = derived_rows("dynamo_h200_llama31_8b_fp8_tp1_decode.csv")
    assert profile.name == "H200_TP1P_TP1D"
    assert profile.max_kv_tokens == 945_029
    assert [(p.isl_tokens, round(p.ttft_ms, 3)) for p in profile.prefill] == [
        (float(row["isl_tokens"]), float(row["ttft_ms"])) for row in prefill
    ]
    assert [
        (d.context_tokens, round(d.concurrency), round(d.itl_ms, 4), round(d.tokens_per_s, 4))
        for d in profile.decode
    ] == [
        (
            float(row["context_tokens"]),
            int(row["concurrency"]),
            float(row["itl_ms"]),
            float(row["decode_tokens_per_s_per_gpu"]),
        )
        for row in decode
    ]


def test_a_replica_of_several_gpus_has_their_throughput() -> None:
    one = load_dynamo(DYNAMO)
    two = load_dynamo(DYNAMO, name="tp2", gpus=2)

    assert two.name == "tp2"
    assert [d.tokens_per_s for d in two.decode] == [2 * d.tokens_per_s for d in one.decode]
    assert two.prefill == one.prefill


def test_the_bundled_profile_is_dynamos_files_byte_for_byte() -> None:
    bundled = bundled_profile_dir(DEFAULT_PROFILE)

    for file in (PREFILL_FILE, DECODE_FILE):
        assert filecmp.cmp(bundled / file, DYNAMO / file, shallow=False), file
    readme = (bundled / "README.md").read_text()
    assert "Apache-2.0" in readme
    assert "e3619ce0990675b2952e2ab22cf614279a8c6403" in readme
    assert "Apache License" in (bundled / "LICENSE").read_text()


@pytest.mark.parametrize("name", BUNDLED_PROFILES)
def test_every_bundled_profile_loads(name: str) -> None:
    profile = load_profile(name)

    assert profile.name == name
    assert profile.prefill
    assert profile.decode


def test_the_default_profile_is_the_h200_measurement() -> None:
    profile = load_profile(DEFAULT_PROFILE)

    measured = load_dynamo(DYNAMO)
    assert profile.prefill_ms(2134) == 49.968438
    assert profile.prefill == measured.prefill
    assert profile.decode == measured.decode
    assert profile.max_kv_tokens == measured.max_kv_tokens


def test_loaded_profiles_are_cached() -> None:
    assert load_profile(DEFAULT_PROFILE) is load_profile(DEFAULT_PROFILE)


def test_a_profile_can_be_a_directory_path() -> None:
    profile = load_profile(str(DYNAMO))

    assert profile.name == "H200_TP1P_TP1D"


def test_an_unknown_profile_names_the_bundled_ones() -> None:
    with pytest.raises(ProfileError, match=f"unknown profile 'no-such'.*{DEFAULT_PROFILE}"):
        load_profile("no-such")


def copy_dynamo(tmp_path: Path) -> Path:
    directory = tmp_path / "profile"
    shutil.copytree(DYNAMO, directory)
    for file in directory.rglob("*"):
        file.chmod(0o755 if file.is_dir() else 0o644)  # the shared data is read-only
    return directory


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    directory = copy_dynamo(tmp_path)
    (directory / DECODE_FILE).unlink()

    with pytest.raises(ProfileError, match=r"selected_decode_interpolation/raw_data\.npz: no such"):
        load_dynamo(directory)


def test_missing_arrays_are_named(tmp_path: Path) -> None:
    directory = copy_dynamo(tmp_path)
    np.savez(directory / PREFILL_FILE, prefill_isl=np.array([100, 200]))

    with pytest.raises(ProfileError) as raised:
        load_dynamo(directory)

    assert str(directory / PREFILL_FILE) in str(raised.value)
    assert "missing arrays prefill_ttft (has prefill_isl)" in str(raised.value)


def test_arrays_of_different_lengths_are_refused(tmp_path: Path) -> None:
    directory = copy_dynamo(tmp_path)
    np.savez(directory / PREFILL_FILE, prefill_isl=np.array([100, 200]), prefill_ttft=[1.0])

    with pytest.raises(ProfileError, match="arrays differ in length"):
        load_dynamo(directory)


def test_a_file_that_is_not_an_archive_is_refused(tmp_path: Path) -> None:
    directory = copy_dynamo(tmp_path)
    (directory / PREFILL_FILE).write_text("isl,ttft\n100,19.5\n")

    with pytest.raises(ProfileError, match=r"cannot read it as a NumPy \.npz archive"):
        load_dynamo(directory)


def test_bad_values_are_refused_with_the_directory(tmp_path: Path) -> None:
    directory = copy_dynamo(tmp_path)
    np.savez(directory / PREFILL_FILE, prefill_isl=np.array([100, 200]), prefill_ttft=[5.0, -1])

    with pytest.raises(ProfileError, match=r"prefill\[1\].ttft_ms must be a positive") as raised:
        load_dynamo(directory)

    assert isinstance(raised.value, ValueError)
    assert str(directory) in str(raised.value)


def splitwise(tensor_parallel: int) -> PerfProfile:
    return load_splitwise(
        SPLITWISE, model="llama2-70b", hardware="h100-80gb", tensor_parallel=tensor_parallel
    )


def test_splitwise_prefill_is_the_batch_1_median_per_prompt_size() -> None:
    profile = splitwise(4)

    medians = {
        int(row["prompt_size"]): float(row["prompt_time_ms_median"])
        for row in derived_rows("splitwise_perf_model_medians.csv")
        if (row["model"], row["hardware"], row["tensor_parallel"], row["batch_size"])
        == ("llama2-70b", "h100-80gb", "4", "1")
        and row["token_size"] == "128"
    }
    assert profile.name == "splitwise-llama2-70b-h100-80gb-tp4"
    assert profile.max_kv_tokens is None
    assert [p.isl_tokens for p in profile.prefill] == sorted(medians)
    for point in profile.prefill:
        if point.isl_tokens != 512:  # 512 also has the runs of the output-length sweep
            assert point.ttft_ms == pytest.approx(medians[int(point.isl_tokens)], abs=1e-3)


def test_splitwise_decode_is_the_batch_sweep() -> None:
    profile = splitwise(4)

    assert [d.concurrency for d in profile.decode] == [1, 2, 4, 8, 16, 32, 64]
    assert {d.context_tokens for d in profile.decode} == {512 + 128 / 2}
    batch_32 = profile.decode[5]
    assert batch_32.itl_ms == pytest.approx(36.885, abs=1e-3)
    assert batch_32.tokens_per_s == pytest.approx(32 / 36.885 * 1000, rel=1e-4)


def test_the_failed_batch_64_run_at_tp2_is_left_out() -> None:
    assert [d.concurrency for d in splitwise(2).decode] == [1, 2, 4, 8, 16, 32]


def test_an_unknown_splitwise_configuration_lists_the_known_ones() -> None:
    with pytest.raises(
        ProfileError, match=r"no runs for llama2-70b/h100-80gb/TP3 \(has bloom-176b.*"
    ):
        splitwise(3)


def test_a_csv_without_the_needed_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "perf.csv"
    path.write_text("model,hardware,prompt_size\nllama2-70b,h100-80gb,512\n")

    with pytest.raises(ProfileError, match="missing columns tensor_parallel, batch_size"):
        load_splitwise(path, model="llama2-70b", hardware="h100-80gb", tensor_parallel=2)


def test_a_missing_csv_is_named(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"perf\.csv: cannot read it"):
        load_splitwise(
            tmp_path / "perf.csv", model="llama2-70b", hardware="h100-80gb", tensor_parallel=2
        )

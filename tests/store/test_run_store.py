"""The results store: parts appended and read back, one row per case over failed and
retried parts, a malformed manifest named, and a truncated part quarantined (then
recomputed by a real run)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from attnedit.errors import DataError
from attnedit.report.studies import write_tables
from attnedit.store.run_store import RunStore
from processes import assert_same_rows, cli, finish, run_dir_of


def test_append_and_read_back(tmp_path):
    store = RunStore(tmp_path)
    store.append([{"case_id": "a", "v": 1.0}, {"case_id": "b", "v": 2.0}])
    store.append([{"case_id": "c", "v": 3.0}])
    (store.cases_dir / ".part-unfinished.parquet.tmp").write_bytes(b"half written")
    frame = pd.read_parquet(tmp_path / "cases")  # the documented way to read a run
    assert sorted(frame.case_id) == ["a", "b", "c"]
    assert store.done_case_ids() == {"a", "b", "c"}
    assert list(store.read().v) == [1.0, 2.0, 3.0]


def test_malformed_manifest_is_named(tmp_path):
    store = RunStore(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="manifest.json is not valid JSON"):
        store.read_json("manifest.json")
    with pytest.raises(DataError, match="does not exist"):
        store.read_json("other.json")


def _row(cid: str, failed: bool, value: float, **extra) -> dict:
    return {"case_id": cid, "ssim": value, "failed": failed, "error": "RuntimeError: x" if failed else None, **extra}


def test_store_keeps_one_row_per_case_and_pandas_reads_every_part(tmp_path):
    store = RunStore(tmp_path)
    plain = pd.DataFrame([{"case_id": "c", "ssim": 0.7, "ssim_border": "crop", "image_path": "c.png"}])  # no failed, error
    plain.to_parquet(store.cases_dir / "part-1-1-00001.parquet", index=False)
    store.append([_row("a", True, float("nan"), image_path=None)])  # a failed-only part
    store.append([_row("b", False, 0.5, ssim_border="crop", image_path="b.png")])
    assert store.done_case_ids() == {"b", "c"}  # failed rows are not done; rows without a failed column are
    assert store.failed_case_ids() == {"a"}
    frame = pd.read_parquet(tmp_path / "cases")  # pyarrow's schema comes from the first file it lists
    assert sorted(frame.case_id) == ["a", "b", "c"] and "ssim_border" in frame and "error" in frame
    # a retry that fails again: the newest failure is the case's row
    store.append([_row("a", True, float("nan"), image_path=None, error_note="second")])
    assert store.read().set_index("case_id").loc["a", "error_note"] == "second"
    # a retry that passes (before drop_failed: a kill between the two writes) wins over failures
    part = store.append([_row("a", False, 0.9, ssim_border="crop", image_path="a.png"), _row("d", True, np.nan)])
    read = store.read().set_index("case_id")
    assert read.loc["a", "ssim"] == 0.9 and not read.loc["a", "failed"] and len(read) == 4
    assert store.drop_failed({"a", "d"}, keep=part) == 2  # the new part's failed row of d stays
    on_disk = pd.read_parquet(tmp_path / "cases")
    assert sorted(on_disk.case_id) == ["a", "b", "c", "d"] and on_disk.case_id.is_unique
    assert not list(store.cases_dir.glob("z-failed-*")), "emptied failed-only parts are deleted"
    # a new run whose first batch failed whole: its part must not give the directory its schema
    fresh = RunStore(tmp_path / "fresh")
    fresh.append([_row("a", True, float("nan"), image_path=None)])
    fresh.append([_row("b", False, 0.5, ssim_border="crop", image_path="b.png")])
    assert list(pd.read_parquet(fresh.cases_dir).set_index("case_id").ssim_border.fillna("-")) == ["crop", "-"]


@pytest.mark.slow
def test_a_truncated_part_is_quarantined_and_recomputed(two_writers, tmp_path, capsys):
    shared, overrides, _, outputs = two_writers
    root = shutil.copytree(shared, tmp_path / "two")  # the two writers' run stays as they left it
    overrides = [o.replace(str(shared), str(root)) for o in overrides]
    run_dir = root / run_dir_of(outputs[0]).relative_to(shared)
    complete = pd.read_parquet(run_dir / "cases")
    parts = sorted((run_dir / "cases").glob("*.parquet"))
    for part in parts[:2]:  # copies cut short
        part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    write_tables(run_dir)  # attnedit-tables' path: RunStore.read
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and f"unreadable part file {parts[0]}" in err[0] and "quarantine" in err[0]
    for part in parts[:2]:
        assert (run_dir / "cases" / "quarantine" / f"_{part.name}").exists() and not part.exists()
    assert len(pd.read_parquet(run_dir / "cases")) == 14, "pandas skips the quarantine folder"
    parts[2].write_bytes(parts[2].read_bytes()[:100])  # the run itself meets one too

    output = finish(cli(*overrides, root=root))  # a real process resumes: recomputes the quarantined cases
    assert f"unreadable part file {parts[2]}" in output and "moved to" in output
    assert f"resuming {run_dir}: 13 of 16 cases already done" in output
    frame = pd.read_parquet(run_dir / "cases")
    assert_same_rows(frame, complete)

"""Finding runs and telling them apart: the overrides in which runs (or a multirun's jobs)
differ, the run directories that arguments name (a sweep folder, a folder of runs, runs
that never started) and the folder a comparison goes to."""

from __future__ import annotations

import json

import pytest

from attnedit.errors import DataError
from attnedit.store.overrides import config_differences, distinguishing_overrides, overrides_text, parse_overrides
from attnedit.store.run_index import comparison_folder, find_runs, run_dirs_from, sweep_jobs


def test_typed_overrides_differ_in_the_swept_keys_only():
    jobs = [parse_overrides(["model=tiny_ddpm", "method=sad", "method.alphas=[0.2]", "+extra=1"]),
            parse_overrides(["model=tiny_ddpm", "method=random", "method.alphas=[0.2]"]),
            parse_overrides(["model=tiny_ddpm", "method=random", "method.alphas=[0.4]", "~dataset.seeds"])]
    assert distinguishing_overrides(jobs) == [
        {"method": "sad", "method.alphas": "[0.2]", "extra": "1"},
        {"method": "random", "method.alphas": "[0.2]"},
        {"method": "random", "method.alphas": "[0.4]", "~dataset.seeds": ""},
    ]
    assert distinguishing_overrides(jobs[:1]) == [{}]
    assert overrides_text(distinguishing_overrides(jobs)[2]) == "method=random method.alphas=[0.4] ~dataset.seeds"


def test_recorded_configs_fold_groups_and_nodes_and_leave_out_non_result_keys():
    sad = {"name": "quickstart", "device": "cpu", "batch_size": 8,
           "method": {"_target_": "attnedit.methods.sad.SAD", "name": "sad", "alphas": [-0.4, 0.4], "window": [0.5, 1]},
           "metrics": {"ssim": {"_target_": "x.SSIM"}, "psnr": {"_target_": "x.PSNR"}},
           "dataset": {"num_samples": 2, "first_seed": 0}, "model": {"_target_": "a.B", "dtype": "float32"}}
    other = json.loads(json.dumps(sad))
    other.update(device="cuda", batch_size=2)  # how fast, where: not what the run is
    other["method"].update(_target_="attnedit.methods.random_directions.RandomDirections", name="random", seed=0)
    other["metrics"]["lpips"] = {"_target_": "x.LPIPS", "net": "alex"}
    other["dataset"]["num_samples"] = 4
    other["model"]["_target_"] = "a.C"
    assert config_differences([sad, other]) == [
        {"method": "sad", "dataset.num_samples": "2", "metrics": "[psnr,ssim]", "model._target_": "B"},
        {"method": "random", "dataset.num_samples": "4", "metrics": "[lpips,psnr,ssim]", "model._target_": "C"},
    ]
    assert config_differences([sad, json.loads(json.dumps(sad))]) == [{}, {}]
    assert config_differences([sad]) == [{}]


def _run(folder):
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    return folder


def test_arguments_expand_to_runs_and_skip_runs_that_never_started(tmp_path, capsys):
    runs = tmp_path / "results" / "runs" / "study"
    first, second = _run(runs / "aaa"), _run(runs / "bbb")
    (runs / "ccc" / "cases").mkdir(parents=True)  # a run that stopped before its manifest
    sweep = tmp_path / "results" / "hydra" / "multirun_x"
    for job, run_dir in (("0", second), ("1", first), ("2", None), ("10", second)):
        (sweep / job / ".hydra").mkdir(parents=True)
        (sweep / job / ".hydra" / "overrides.yaml").write_text(f"- method.alphas=[{job}]\n- device=cpu\n")
        if run_dir is not None:
            (sweep / job / "run_dir.txt").write_text(f"{run_dir}\n")
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    assert [j.name for j in sweep_jobs(sweep)] == ["0", "1", "2", "10"]
    assert sweep_jobs(sweep)[3].overrides == {"method.alphas": "[10]", "device": "cpu"}

    found = find_runs([sweep])  # job 10 shares job 0's run (shards): each run once, in job order
    assert found.run_dirs == [second, first] and len(found.skipped) == 1 and str(sweep / "2") in found.skipped[0]
    found = find_runs(sorted(runs.glob("*")))  # results/runs/study/* as a shell expands it
    assert found.run_dirs == [first, second] and found.skipped == [f"{runs / 'ccc'}: a run that never started "
                                                                   "(no manifest.json)"]
    assert find_runs([runs]).run_dirs == [first, second]  # a folder of runs

    assert run_dirs_from([*runs.glob("*")]) and capsys.readouterr().err.strip().splitlines() == [
        f"attnedit: skipped {runs / 'ccc'}: a run that never started (no manifest.json)"]
    with pytest.raises(DataError, match="ccc is not a run directory"):
        run_dirs_from([runs / "ccc"])
    with pytest.raises(DataError, match=r"nope is not a run directory \(no such folder\)"):
        run_dirs_from([first, runs / "nope"])


def test_a_comparison_goes_beside_the_runs_folder_the_same_for_any_order(tmp_path):
    runs = tmp_path / "results" / "runs"
    first, second = _run(runs / "a" / "111"), _run(runs / "b" / "222")
    folder = comparison_folder([first, second])
    assert folder.parent == (tmp_path / "results" / "comparisons").resolve()
    assert comparison_folder([second, first]) == folder != comparison_folder([first])


def test_runs_moved_out_of_a_runs_folder_get_their_comparison_beside_them(tmp_path):
    """Copied runs (``~/keep/R1``) keep the comparison next to them, never two folders up
    or inside one of the runs."""
    first, second = _run(tmp_path / "keep" / "R1"), _run(tmp_path / "keep" / "old" / "R2")
    assert comparison_folder([first, second]).parent == (tmp_path / "keep" / "comparisons").resolve()
    assert comparison_folder([first]).parent == (tmp_path / "keep" / "comparisons").resolve()

"""The comparison of SAD and its baselines (report/comparison.py): every method through the
runner as experiments/celebahq_compare runs it, with the same core columns; one comparison
table and the editing-time table written by attnedit-tables, recomputed from the rows."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from attnedit.cli.tables import main as tables
from attnedit.report.comparison import build_comparison, comparison_table
from attnedit.report.timing import timing_table
from attnedit.store.run_store import RunStore
from comparison_runs import COMPARED, CORE


def test_all_methods_produce_rows_with_the_same_core_columns(all_runs):
    frames = {m: pd.read_parquet(d / "cases") for m, d in all_runs.items()}
    keys = None
    for method, frame in frames.items():
        assert set(CORE) <= set(frame.columns), (method, set(CORE) - set(frame.columns))
        assert (frame.method == method).all() and len(frame) == 4
        if method != "sad":  # labeled in setup by the comparison's labeling
            assert frame.label.str.lstrip("-").isin(["redder", "bluer"]).all(), method
            assert frame.source_text.isin(["x", "red", "blue"]).all(), method
        cases = sorted(zip(frame.sample_id, frame.direction, frame.alpha))
        assert keys is None or cases == keys, "same samples, directions and alphas"
        keys = cases
    for method in ("pullback", "pullback_move"):
        rows = frames[method]
        per_sample = rows.groupby("sample_id").discovery_seconds_per_sample.first()
        assert (per_sample > 0).all() and rows.x_step_ratio.gt(0).all() and (rows.position == "x_t").all()
        # honest accounting: the shares in seconds_per_case add up to one decomposition per sample
        assert rows.discovery_share_seconds.sum() == pytest.approx(per_sample.sum(), rel=1e-9)
        assert (rows.seconds_per_case >= rows.discovery_share_seconds).all()
    assert (frames["pullback"].discovery_share_seconds == 0).sum() == 2, "each sample decomposed once, in its first batch"
    official = frames["pullback"]
    assert official.sign_flipped.isin([True, False]).all() and official.sign_agreement.between(0, 1).all()
    assert (official.pullback_iterations == 1).all() and (official.guidance_unet_evals == 4).all()
    assert (official.performance_boosting_t == 333).all() and (frames["hspace_pca"].position == "mid_block_output").all()
    assert (official.guidance_edit_step == 2.5).all() and (frames["hspace_pca"].strength == 0.25).all()
    assert frames["hspace_pca"].delta_h_ratio.gt(0).all()


def test_one_comparison_table_and_the_editing_time_table(all_runs, tmp_path, capsys):
    dirs = [str(d) for d in all_runs.values()]
    tables([*dirs, "--out", str(tmp_path), "--project", "celebahq_sad"])
    assert "comparison:" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "comparison.csv", keep_default_na=False)
    assert table.method.tolist() == [*COMPARED, "SAD", "Riemannian pullback"]
    stats = ["mean", "std", "ci_low", "ci_high", "n", "n_nan", "n_failed"]  # CSV: numeric columns
    assert list(table.columns) == ["method", "n", "samples", *(f"{m}_{s}" for m in ("ssim", "psnr") for s in stats),
                                   "source"]
    n = len(COMPARED)
    assert table.source[:n].str.startswith("measured").all() and table.source[n].startswith("SAD paper")
    table = table[:n].astype({"n": int})
    assert (table.n == 4).all()
    for method, run_dir in all_runs.items():
        frame = pd.read_parquet(run_dir / "cases")
        row = table.set_index("method").loc[method]
        mean, std = float(row.psnr_mean), float(row.psnr_std)
        assert mean == pytest.approx(frame.psnr.mean(), abs=1e-4) and std == pytest.approx(frame.psnr.std(ddof=0), abs=1e-4)
    assert comparison_table(dirs).method.tolist() == table.method.tolist(), "published rows only in the files"
    for name in ("comparison", "comparison_by_alpha", "comparison_editing_time"):
        for suffix in ("md", "csv", "tex"):
            assert (tmp_path / f"{name}.{suffix}").exists()
    assert "RANDOM MODEL WEIGHTS" in (tmp_path / "comparison.md").read_text()

    timing = pd.read_csv(tmp_path / "comparison_editing_time.csv").set_index("method")
    timing_text = (tmp_path / "comparison_editing_time.md").read_text()
    assert "measured on cpu on" in timing_text and "PROJECTION, not measured" in timing_text
    assert "the SAD paper's CelebA-HQ study: 1500 cases over 100 samples" in timing_text
    for method, run_dir in all_runs.items():  # recompute from the rows and manifest
        frame = pd.read_parquet(run_dir / "cases")
        recorded = json.loads((run_dir / "manifest.json").read_text())
        manifest = recorded["method"]
        assert timing.run_s[method] == pytest.approx(sum(s["wall_seconds"] for s in recorded["cost"]["sessions"]))
        assert timing.n[method] == len(frame)
        once = manifest.get("discovery_compute_seconds") or manifest["discovery_seconds"]
        share = frame.get("discovery_share_seconds", pd.Series(0.0, index=frame.index)).fillna(0.0)
        per_sample = (frame.groupby("sample_id").discovery_seconds_per_sample.first().mean()
                      if method.startswith("pullback") else 0)
        edit = (frame.seconds_per_case - share).mean()
        assert timing.edit_s[method] == pytest.approx(edit, rel=1e-6)
        assert timing.projected_s[method] == pytest.approx(once + 100 * per_sample + 1500 * edit, rel=1e-6)
    assert timing.discovery.to_dict() == {"sad": "once per model", "pullback": "per sample", "pullback_move": "per sample",
                                          "hspace_pca": "once per model", "attn_input_pca": "once per model",
                                          "random": "once per model"}
    assert timing.discovery_once_s["pullback"] > 0, "the sign reference's decomposition, once per run"
    assert timing.projected_vs_sad["sad"] == 1.0
    assert (Path(dirs[0]) / "tables" / "editing_time.csv").exists(), "each run's own tables hold its timing too"


def test_hspace_pca_rows_that_edited_an_attention_input_read_as_attn_input_pca(all_runs, tmp_path):
    """Rows stored as method=hspace_pca whose position is an attention input are PCA of
    attention-layer inputs: they are read, tabled and timed as attn_input_pca, and the
    h-space PCA's own rows (the mid-block output) keep their name."""
    import shutil

    relabeled = tmp_path / "attn_input_pca_as_hspace_pca"
    shutil.copytree(all_runs["attn_input_pca"], relabeled)
    for part in RunStore(relabeled).part_files():
        frame = pd.read_parquet(part)
        frame.assign(method="hspace_pca").to_parquet(part, index=False)
    assert set(pd.read_parquet(relabeled / "cases").method) == {"hspace_pca"}
    assert set(RunStore(relabeled).read().method) == {"attn_input_pca"}
    table = comparison_table([relabeled, all_runs["hspace_pca"]])
    assert table.method.tolist() == ["attn_input_pca", "hspace_pca"]
    assert timing_table([relabeled]).method.tolist() == ["attn_input_pca"]


def test_comparison_means_leave_out_alpha_zero(all_runs, tmp_path):
    """alpha = 0 rows (the unedited sample) stay out of the means over alphas, not out of the per-alpha table."""
    import shutil

    moved = tmp_path / "with_zero"
    shutil.copytree(all_runs["sad"], moved)
    store = RunStore(moved)
    frame = store.read()
    frame.loc[frame.index[:2], "alpha"] = 0.0
    for part in store.part_files():
        part.unlink()
    frame.to_parquet(store.cases_dir / "part-00000.parquet", index=False)
    table = comparison_table([moved])
    edits = frame[frame.alpha != 0]
    assert table.n.tolist() == [len(edits)] == [2]
    assert table.psnr[0] == f"{edits.psnr.mean():.4f} ± {edits.psnr.std(ddof=0):.4f}"
    title, tables, _ = build_comparison([moved])
    assert sorted(tables["comparison_by_alpha"].alpha) == [0.0, 0.4]
    assert "alpha = 0 rows (no edit) left out" in title


def _with_clip_sample(run_dir: Path, to: Path, clip_sample: bool) -> Path:
    """A copy of a run whose rows say it sampled with ``clip_sample`` (as model.clip_sample would)."""
    import shutil

    shutil.copytree(run_dir, to)
    for part in RunStore(to).part_files():
        pd.read_parquet(part).assign(clip_sample=clip_sample).to_parquet(part, index=False)
    return to


def test_methods_of_a_comparison_share_one_sampler(all_runs, tmp_path):
    """Every row records the resolved DDIM clipping and DDIMPipeline's (the tiny checkpoint's
    config: true); methods sampled otherwise are one error; one method's runs may differ
    (they compare the option) and the title names the setting that is not the pipeline's."""
    from attnedit.errors import ConfigError

    for method, run_dir in all_runs.items():
        frame = pd.read_parquet(run_dir / "cases")
        assert frame.clip_sample.eq(True).all() and frame.clip_sample_pipeline.eq(True).all(), method
    unclipped = _with_clip_sample(all_runs["pullback"], tmp_path / "pullback_unclipped", False)
    with pytest.raises(ConfigError, match=r"different model.clip_sample \(clip_sample=False: pullback; "
                                          r"clip_sample=True: sad\)"):
        build_comparison([all_runs["sad"], unclipped])
    title, _, _ = build_comparison([all_runs["pullback"], unclipped])
    assert "[DDIM clip_sample=False, not diffusers' DDIMPipeline's setting for this checkpoint" in title
    assert "clip_sample" not in build_comparison([all_runs["sad"], all_runs["pullback"]])[0]


def test_a_run_made_before_clip_sample_was_recorded_counts_as_the_checkpoints_sampler(tmp_path):
    """Fast, from frames: a run without the ``clip_sample`` column sampled as the checkpoint's
    config says; beside a run forced otherwise it is one error naming both runs and the fix,
    whatever their methods; beside unforced runs it passes."""
    from attnedit.errors import ConfigError
    from attnedit.report.comparison import check_one_sampler
    from attnedit.report.runs import Run

    def run(name, method, **columns):
        return Run(tmp_path / name, pd.DataFrame({"method": [method] * 2, **{k: [v] * 2 for k, v in columns.items()}}), {})

    old_sad = run("old_sad", "sad")  # made before the column existed: clipped as google's configs say
    unclipped = run("new_pullback", "pullback", clip_sample=False, clip_sample_pipeline=True)
    for runs in ([old_sad, unclipped], [unclipped, old_sad], [old_sad, run("new_sad", "sad", clip_sample=False,
                                                                           clip_sample_pipeline=True)]):
        with pytest.raises(ConfigError, match=r"predate the clip_sample column") as error:
            check_one_sampler(runs)
        message = str(error.value)
        assert "old_sad" in message and "clip_sample=False" in message and "model.clip_sample=null" in message
    check_one_sampler([old_sad, run("pullback", "pullback", clip_sample=True, clip_sample_pipeline=True)])
    check_one_sampler([old_sad, run("pullback", "pullback")])

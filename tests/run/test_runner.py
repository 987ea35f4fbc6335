"""The runner end to end on the tiny model: rows, images, figures, tables, provenance,
cost, resume after a real process kill (also one between a sample's last part and its
figure), and a two-job Hydra multirun that resumes when rerun."""

from __future__ import annotations

import json
import math
import re
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from attnedit.config import compose
from attnedit.run.runner import Runner, case_id
from attnedit.store.run_index import find_runs
from attnedit.store.run_store import RunStore
from harness import run_overrides
from images import read_png
from processes import assert_same_rows, cli, finish, run_dir_of, wait_for_parts
from table_files import notes


def test_rows_images_figures_tables_and_manifest(finished_run):
    cfg, runner, run_dir = finished_run
    frame = pd.read_parquet(run_dir / "cases")
    assert len(frame) == 2 * 2 * 3 and frame.case_id.is_unique
    for column in ("sample_id", "method", "direction", "label", "alpha", "alpha_scale", "position", "layers",
                   "window_lo", "window_hi", "ssim", "psnr", "seconds_per_case", "image_path", "random_backbone",
                   "identity_edit"):
        assert column in frame, column
    assert set(frame.alpha) == {-0.4, 0.0, 0.4} and set(frame.direction) == {0, 1}
    assert (frame.alpha_scale == "token_norm").all() and not frame.random_backbone.any()
    assert frame.model_random_weights.all()
    for path in frame.image_path:
        assert (run_dir / path).exists()
    # alpha = 0 is not recomputed on the DDPM: its image is the reference, its time not counted
    identity = frame[frame.identity_edit]
    assert list(identity.alpha.unique()) == [0.0] and len(identity) == 4
    assert (identity.image_path == identity.reference_path).all() and identity.seconds_per_case.isna().all()
    assert (frame[~frame.identity_edit].seconds_per_case > 0).all()
    assert sorted(p.name for p in (run_dir / "figures").glob("*.png")) == [
        "alpha_sweep_seed000000.png", "alpha_sweep_seed000001.png", "gallery_direction_0.png", "gallery_direction_1.png", "metric_vs_alpha.png",
        "metric_vs_alpha_by_direction.png"]
    for suffix in ("md", "csv", "tex"):
        assert (run_dir / "tables" / f"summary.{suffix}").exists()
    summary = pd.read_csv(run_dir / "tables" / "by_direction.csv")
    assert len(summary) == 6 and (summary.n == 2).all()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["signature"] == run_dir.name
    assert manifest["versions"]["torch"] == torch.__version__.split("+")[0]
    assert manifest["model"]["weights_sha256_16"] and manifest["model"]["path"] == str(cfg.model.path)
    assert "revision" in manifest["git"] and manifest["config"]["method"]["alphas"] == [-0.4, 0.0, 0.4]
    assert manifest["model"]["settings"]["allow_tf32"] is False and "resumes" not in manifest


def test_every_row_is_scored_against_its_own_samples_reference(finished_run):
    """The RMS difference of each edit from its own sample's reference, recomputed in float64
    from the saved PNGs, against the one the stored PSNR implies (10^(-PSNR/20), computed
    before 8-bit rounding): rounding moves each pixel by <= 0.5/255, so the two RMS
    values differ by at most 1/255."""
    _, runner, run_dir = finished_run
    frame = pd.read_parquet(run_dir / "cases")
    assert frame.groupby("sample_id").size().to_dict() == {"seed000000": 6, "seed000001": 6}
    for row in frame.itertuples():
        assert row.reference_path == f"images/{row.sample_id}/reference.png"
        rms = np.sqrt(np.mean((read_png(run_dir / row.image_path) - read_png(run_dir / row.reference_path)) ** 2))
        assert abs(rms - 10 ** (-row.psnr / 20)) <= 1 / 255 + 1e-12, row.case_id
    for sid in frame.sample_id.unique():  # and each reference is that sample's unedited image
        own = runner.backend.reference([runner.dataset.load(sid)])[0].permute(1, 2, 0).double().numpy()
        assert np.abs(read_png(run_dir / "images" / sid / "reference.png") - own).max() <= 1 / 255 + 1e-3


def test_cost_and_numerical_floor_in_the_manifest_and_titles(finished_run):
    """The floor's numbers and its table titles against an independent recomputation of
    its alpha = 0 batch (samples 0, 1, 0, 1 in one batch of 4, each against its reference
    computed alone, as the runner computes references): numpy float64 PSNR, skimage SSIM."""
    from skimage.metrics import structural_similarity

    _, runner, run_dir = finished_run
    frame = pd.read_parquet(run_dir / "cases")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    cost = manifest["cost"]
    timed = frame.seconds_per_case.to_numpy(dtype=np.float64)
    timed = timed[~np.isnan(timed)]
    assert cost["seconds_per_case_mean"] == pytest.approx(timed.mean(), rel=1e-12)
    assert cost["seconds_per_case_median"] == pytest.approx(np.median(timed), rel=1e-12)
    assert cost["cases_timed"] == 8 and cost["peak_gpu_memory_bytes"] is None  # CPU
    assert cost["device_name"] == manifest["model"]["device_name"] and len(cost["sessions"]) == 1
    assert cost["sessions"][0]["cases"] == 12 and cost["wall_seconds"] > 0
    floor = manifest["numerical_floor"]
    assert floor["sample_ids"] == ["seed000000", "seed000001"] and floor["batch_size"] == 4
    assert floor["edit"]["alpha"] == 0.0

    samples = [runner.dataset.load(sid) for sid in ("seed000000", "seed000001")]
    refs = torch.stack([runner.backend.reference([s])[0] for s in samples]).double().numpy()
    edit = {**runner.method.edits()[0], "alpha": 0.0}
    with runner.method.control(runner.backend, [edit] * 4) as state:
        images = runner.backend.generate([samples[i] for i in (0, 1, 0, 1)], state).double().numpy()
    expected = refs[[0, 1, 0, 1]]
    mse = ((images - expected) ** 2).reshape(4, -1).mean(axis=1)
    ssim = min(structural_similarity(i, r, data_range=1.0, channel_axis=0, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False) for i, r in zip(images, expected))
    assert floor["identical"] is bool((mse == 0).all())
    assert floor["ssim_min"] == pytest.approx(ssim, abs=2e-5) and floor["ssim_min"] > 0.99
    if (mse == 0).all():
        assert floor["psnr_min"] is None
        want = "numerical floor (alpha = 0 via the edit path, 2 samples, batch 4): identical to the unedited image"
    else:
        psnr = 10 * np.log10(1.0 / mse.max())  # the worst image of the batch
        assert floor["psnr_min"] == pytest.approx(psnr, abs=1e-3)
        want = None
    for name in ("summary", "by_direction", "editing_time"):
        title = notes(run_dir / "tables" / f"{name}.md")  # the table's footnotes
        if want is not None:
            assert want in title, (name, title)
            continue
        shown = next(filter(None, (re.fullmatch(r"numerical floor \(alpha = 0 via the edit path, (\d+) samples, batch "
                                                r"(\d+)\): PSNR >= (\d+\.\d) dB, SSIM >= (\d\.\d{5})", n)
                                   for n in title)), None)
        assert shown, (name, title)
        assert shown[1] == "2" and shown[2] == "4", (name, title)
        assert abs(float(shown[3]) - psnr) <= 0.05 + 1e-9, (name, shown[3], psnr)  # one decimal shown
        assert abs(float(shown[4]) - ssim) <= 5e-6 + 2e-5, (name, shown[4], ssim)  # five decimals shown


def test_stored_metrics_equal_an_independent_recomputation(finished_run):
    _, runner, run_dir = finished_run
    frame = pd.read_parquet(run_dir / "cases")
    row = frame.iloc[3]
    sample = runner.dataset.load(row.sample_id)
    edit = next(e for e in runner.method.edits() if case_id(row.sample_id, "sad", e) == row.case_id)
    reference = runner.backend.reference([sample]).double().numpy()
    with runner.method.control(runner.backend, [edit]):
        edited = runner.backend.generate([sample]).double().numpy()
    mse = np.mean((edited - reference) ** 2)
    assert row.psnr == pytest.approx(-10 * math.log10(mse), abs=0.05)  # batch composition differs slightly


def test_running_again_adds_nothing(finished_run):
    cfg, _, run_dir = finished_run
    parts = sorted((run_dir / "cases").glob("*.parquet"))
    first = json.loads((run_dir / "manifest.json").read_text())
    again = Runner(cfg).run()
    assert again == run_dir and sorted((run_dir / "cases").glob("*.parquet")) == parts
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["created"] == first["created"] and manifest["numerical_floor"] == first["numerical_floor"]
    assert len(manifest["resumes"]) == 1 and manifest["resumes"][0]["started"] >= first["created"]
    assert manifest["cost"]["sessions"][0] == first["cost"]["sessions"][0]
    assert [s["cases"] for s in manifest["cost"]["sessions"]] == [12, 0]


def test_the_runner_draws_each_sample_figure_without_rereading_the_store(tiny_ddpm_dir, tmp_path, monkeypatch):
    reads, finishing = [], []
    read = RunStore.read
    monkeypatch.setattr(RunStore, "read", lambda self, sample_id=None: reads.append((bool(finishing), sample_id))
                        or read(self, sample_id))
    finish_run = Runner.finish
    monkeypatch.setattr(Runner, "finish", lambda self: finishing.append(True) or finish_run(self))
    run_dir = Runner(compose("config", run_overrides(tmp_path, tiny_ddpm_dir, "batch_size=3"))).run()
    assert not [r for r in reads if not r[0]], "no store read during the sample loop (rows kept in memory)"
    assert len(list((run_dir / "figures").glob("alpha_sweep_*.png"))) == 2
    rows = RunStore(run_dir).read(sample_id="seed000001")
    assert set(rows.sample_id) == {"seed000001"} and len(rows) == 4


@pytest.mark.slow
def test_killed_runs_resume_to_the_uninterrupted_rows_and_every_figure(tiny_ddpm_dir, tmp_path):
    """A SIGKILL from outside mid-run, then one that lands between a sample's last part
    and its figure (ATTNEDIT_TEST_DIE_AT), then a resume: rows equal an uninterrupted run's
    to 2e-6, alpha = 0 rows included, in batches of 4 that cross samples; rows stored before
    a kill are never rewritten; the manifest holds each resume and only finished sessions' cost."""
    extra = ("dataset.num_samples=3", "method.alphas=[-0.4,0.0,0.4]", "batch_size=4")
    straight_root, killed_root = tmp_path / "straight", tmp_path / "killed"
    straight_root.mkdir(), killed_root.mkdir()
    straight = cli(*run_overrides(straight_root, tiny_ddpm_dir, *extra), root=straight_root)
    overrides = run_overrides(killed_root, tiny_ddpm_dir, *extra)
    first = cli(*overrides, root=killed_root)
    parts = wait_for_parts(killed_root, 1, first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    run_dir = parts[0].parent.parent
    partial = pd.read_parquet(run_dir / "cases")
    after_first = len(partial)
    assert after_first < 18

    second = cli(*overrides, root=killed_root, env={"ATTNEDIT_TEST_DIE_AT": "before_figure"})
    finish(second, expect_ok=False)
    assert second.returncode == -signal.SIGKILL
    rows = pd.read_parquet(run_dir / "cases")
    after_second = len(rows)
    finished = [s for s, n in rows.groupby("sample_id").size().items() if n == 6]
    assert any(not (run_dir / "figures" / f"alpha_sweep_{s}.png").exists() for s in finished), "killed before it"

    output = finish(cli(*overrides, root=killed_root))
    assert "resuming" in output
    reference = pd.read_parquet(run_dir_of(finish(straight)) / "cases")
    frame = pd.read_parquet(run_dir / "cases")
    assert len(frame) == 18 and frame.identity_edit.sum() == 6 and frame.case_id.is_unique
    assert_same_rows(frame, reference)
    merged = partial.merge(frame, on="case_id", suffixes=("_before", "_after"))
    assert len(merged) == after_first and np.array_equal(merged.psnr_before, merged.psnr_after, equal_nan=True)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert len(manifest["resumes"]) == 2 and all(r["started"] >= manifest["created"] for r in manifest["resumes"])
    assert [s["cases"] for s in manifest["cost"]["sessions"]] == [18 - after_second]  # the killed ones never finished
    assert sorted(p.name for p in (run_dir / "figures").glob("alpha_sweep_*.png")) == [
        f"alpha_sweep_seed{i:06d}.png" for i in range(3)]


@pytest.mark.slow
def test_two_job_multirun_and_its_rerun_resumes_every_job(tiny_ddpm_dir, tmp_path):
    overrides = run_overrides(tmp_path, tiny_ddpm_dir, "dataset.num_samples=1", "method.directions=1",
                              "numerical_floor.samples=0")
    command = ["-m", *[o for o in overrides if not o.startswith("method.alphas")], "method.alphas=[0.2],[0.4]"]
    outputs = []
    for _ in range(2):  # the same command again: a new sweep folder, so a new W&B group
        process = cli(*command, root=tmp_path)
        output, _ = process.communicate(timeout=400)
        assert process.returncode == 0, output
        outputs.append(output)
    run_dirs = [[line.removeprefix("run dir: ") for line in out.splitlines() if line.startswith("run dir: ")]
                for out in outputs]
    assert len(run_dirs[0]) == 2 and len(set(run_dirs[0])) == 2 and run_dirs[1] == run_dirs[0]
    assert outputs[1].count("resuming ") == 2 and "resuming " not in outputs[0]
    alphas = sorted(float(pd.read_parquet(Path(d) / "cases").alpha.iloc[0]) for d in run_dirs[0])
    assert alphas == [0.2, 0.4]
    for run_dir in run_dirs[0]:
        assert len(list((Path(run_dir) / "cases").glob("*.parquet"))) == 1  # nothing recomputed
        manifest = json.loads((Path(run_dir) / "manifest.json").read_text())
        before, now = manifest["resumes"][0]["config_changed"]["group"]  # the signature ignored it
        assert before != now and before.startswith("quickstart/multirun_") and now == manifest["config"]["group"]
    # it ends with each job's overrides told apart beside its run dir (its rows' alpha), then the
    # sweep's report; the comparison is the sweep's, never in a run's tables/
    sweep = sorted((tmp_path / "results" / "hydra" / "quickstart").glob("multirun_*"))[0].resolve()
    jobs = [f"job {i} (method.alphas=[{pd.read_parquet(Path(d) / 'cases').alpha.iloc[0]}]) run dir: {d}"
            for i, d in enumerate(run_dirs[0])]
    assert outputs[0].splitlines()[-3:] == [*jobs, f"report: {sweep / 'report' / 'index.html'}"]
    assert (sweep / "report" / "index.html").is_file()
    assert len(pd.read_csv(sweep / "comparison" / "comparison.csv")) == 2
    assert not [p for d in run_dirs[0] for p in (Path(d) / "tables").glob("comparison*")]
    assert find_runs([sweep]).run_dirs == [Path(d) for d in run_dirs[0]]  # attnedit-tables/report <sweep folder>

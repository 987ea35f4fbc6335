"""A method that samples otherwise than the study (pullback's eta-1 boosting) is scored
against its own sampler's unedited image (run/references.py), with the study's as
``<metric>_vs_unedited``; ``method.reference=unedited`` swaps them; the comparison shows
both (report/scored_against.py). Checked against the backend's plain DDIM loop with the
boosted eta schedule and numpy float64 PSNR of the saved PNGs."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pandas as pd
import pytest

from attnedit.config import compose
from attnedit.run.runner import Runner
from harness import run_overrides
from images import read_png

PULLBACK = ("method=pullback", "method.directions=1", "method.alphas=[0.0,1.0]", "method.rank=1",
            "method.min_iters=0", "method.max_iters=1", "method.guidance_steps=1", "method.t_edit=0.5",
            "method.sign_alignment=none", "batch_size=4", "figures=false", "numerical_floor.samples=1")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{reference: run dir} of one pullback run per ``method.reference`` on a 16x16 UNet of
    the tiny DDPM's block types (4 steps 750..0: edit at 500, eta 1 from 250); batches of 4
    hold both samples."""
    from attnedit.backends.tiny import build_tiny_ddpm

    model = build_tiny_ddpm(tmp_path_factory.mktemp("models") / "small", sample_size=16, norm_num_groups=4,
                            block_out_channels=(8, 16, 16),
                            down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                            up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
    out = {}
    for kind in ("own_sampler", "unedited"):
        cfg = compose("config", run_overrides(tmp_path_factory.mktemp(kind), model, *PULLBACK,
                                              f"method.reference={kind}"))
        out[kind] = Runner(cfg).run()
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else -10 * math.log10(mse)


@functools.cache
def boosted_unedited(run_dir, seed: int) -> np.ndarray:
    """The unedited sample under eta 1 from 250 down, drawn from the sample's own generator
    after x_T: the backend's plain loop (no stored states, no control)."""
    from attnedit.backends.ddpm import DDPMBackend

    cfg = json.loads((run_dir / "manifest.json").read_text())["config"]["model"]
    backend = DDPMBackend(cfg["path"], device="cpu", num_inference_steps=cfg["num_inference_steps"])
    x, generators = backend.seeded_start([seed])
    return backend.denoise(x, generators=generators, eta_at=lambda t: 1.0 if t <= 250 else 0.0)[0] \
        .permute(1, 2, 0).double().numpy()


def test_rows_are_scored_against_the_boosted_unedited_sample_and_hold_the_study_s(runs):
    run_dir = runs["own_sampler"]
    frame = pd.read_parquet(run_dir / "cases")
    assert len(frame) == 4 and set(frame.reference_kind) == {"own_sampler"}
    for row in frame.itertuples():
        own = read_png(run_dir / row.reference_path)
        assert row.reference_path == f"images/{row.sample_id}/reference_own_sampler.png"
        assert np.abs(own - boosted_unedited(run_dir, int(row.sample_id[-6:]))).max() <= 1 / 255 + 1e-9
        edited = read_png(run_dir / row.image_path)
        unedited = read_png(run_dir / "images" / row.sample_id / "reference.png")
        assert row.psnr == pytest.approx(psnr(edited, own), abs=1e-3)
        assert row.psnr_vs_unedited == pytest.approx(psnr(edited, unedited), abs=1e-3)
        if row.alpha == 0:  # computed, not the study's reference: boosting alone moves it
            assert not row.identity_edit and row.image_path != f"images/{row.sample_id}/reference.png"
            assert np.abs(edited - own).max() <= 1 / 255 + 1e-9
            assert psnr(edited, unedited) < 60
    floor = json.loads((run_dir / "manifest.json").read_text())["numerical_floor"]
    assert floor["reference"] == "own_sampler" and (floor["psnr_min"] is None or floor["psnr_min"] > 60)
    title = (run_dir / "tables" / "summary.md").read_text()
    assert "numerical floor (alpha = 0 via the edit path, 1 samples, batch 4, against the own sampler's" in title


def test_reference_unedited_scores_against_the_study_s_sample(runs):
    own = pd.read_parquet(runs["own_sampler"] / "cases").sort_values("case_id").reset_index(drop=True)
    study = pd.read_parquet(runs["unedited"] / "cases").sort_values("case_id").reset_index(drop=True)
    assert set(study.reference_kind) == {"unedited"}
    assert (study.reference_path == "images/" + study.sample_id + "/reference.png").all()
    for row in study.itertuples():
        edited = read_png(runs["unedited"] / row.image_path)
        unedited = read_png(runs["unedited"] / row.reference_path)
        boosted = read_png(runs["unedited"] / "images" / row.sample_id / "reference_own_sampler.png")
        assert row.psnr == pytest.approx(psnr(edited, unedited), abs=1e-3)
        assert row.psnr_vs_own_sampler == pytest.approx(psnr(edited, boosted), abs=1e-3)
    # the same edits: the two runs' columns swap
    np.testing.assert_allclose(study.psnr_vs_own_sampler, own.psnr, rtol=1e-6)
    np.testing.assert_allclose(study.ssim, own.ssim_vs_unedited, rtol=1e-6)


def test_comparison_shows_both_references_and_names_the_option(runs):
    from attnedit.report.comparison import comparison_frames
    from attnedit.report.runs import load_runs

    title, tables, _, notes = comparison_frames(load_runs([runs["own_sampler"], runs["unedited"]]))
    assert "method.reference=unedited" in title and "own sampler" in title
    table = tables["comparison_references"]
    assert len(table) == 4 and table.groupby("method").scored.sum().tolist() == [1, 1]
    for (label, run_dir) in zip(table.method.unique(), (runs["own_sampler"], runs["unedited"])):
        cases = pd.read_parquet(run_dir / "cases").query("alpha != 0")
        for row in table[table.method == label].itertuples():
            column = "psnr" if row.scored else f"psnr_vs_{row.reference}"
            assert row.psnr.numbers["mean"] == pytest.approx(cases[column].mean(), rel=1e-9)
            assert row.reference == (cases.reference_kind.iloc[0] if row.scored else
                                     {"own_sampler": "unedited", "unedited": "own_sampler"}[cases.reference_kind.iloc[0]])
    assert "own_sampler" in notes["comparison_references"]


def test_rescore_recomputes_the_other_reference_s_columns_and_records_their_settings(runs, tmp_path):
    """``attnedit-rescore metrics.ssim.border=pad`` on a pullback run: ``ssim_vs_unedited``
    is the pad SSIM of the saved PNGs against reference.png too (torchmetrics' own function,
    whose whole-map mean is the pad reading), and its settings are recorded as ``ssim``'s, so
    a row left with the old ones is refused."""
    import shutil

    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure

    from attnedit.cli.rescore import main as rescore_main
    from attnedit.errors import ConfigError
    from attnedit.report.runs import load_run

    run_dir = tmp_path / "run"
    shutil.copytree(runs["own_sampler"], run_dir)
    before = pd.read_parquet(run_dir / "cases").set_index("case_id").sort_index()
    recorded = [json.loads(v) for v in before.metric_settings]
    assert all(r["ssim_vs_unedited"] == r["ssim"] and r["psnr_vs_unedited"] == r["psnr"] for r in recorded)
    rescore_main([str(run_dir), "metrics.ssim.border=pad"])
    after = pd.read_parquet(run_dir / "cases").set_index("case_id").sort_index()

    def tensor(path):
        return torch.from_numpy(read_png(path)).permute(2, 0, 1)[None]

    for row in after.itertuples():
        edited = tensor(run_dir / row.image_path)
        for column, name in (("ssim", row.reference_path), ("ssim_vs_unedited", f"images/{row.sample_id}/reference.png")):
            expected = structural_similarity_index_measure(edited, tensor(run_dir / name), data_range=1.0).item()
            assert getattr(row, column) == pytest.approx(expected, abs=1e-5), column
    edited = after.alpha != 0
    assert (np.abs(after.ssim_vs_unedited[edited] - before.ssim_vs_unedited[edited]) > 1e-6).all()
    np.testing.assert_array_equal(after.psnr_vs_unedited, before.psnr_vs_unedited)  # not rescored
    hashes = [json.loads(v) for v in after.metric_settings]
    assert all(h["ssim_vs_unedited"] == h["ssim"] != r["ssim"] for h, r in zip(hashes, recorded))
    load_run(run_dir)  # one setting per column

    frame = pd.read_parquet(run_dir / "cases")  # one row left with the crop record of its _vs_ column
    frame.loc[0, "metric_settings"] = json.dumps({**json.loads(frame.metric_settings[0]),
                                                  "ssim_vs_unedited": recorded[0]["ssim"]})
    for part in (run_dir / "cases").glob("*.parquet"):
        part.unlink()
    frame.to_parquet(run_dir / "cases" / "part-00000.parquet", index=False)
    with pytest.raises(ConfigError, match="column 'ssim_vs_unedited' holds values computed with different"):
        load_run(run_dir)


def test_a_failed_row_says_which_reference_it_names(runs):
    """A failed case's row holds ``reference_kind`` beside ``reference_path``, as a successful one."""
    from omegaconf import OmegaConf

    runner = Runner(OmegaConf.load(runs["own_sampler"] / "config.yaml"))  # the run's config, as composed
    runner.run()  # done: a resume that only sets the run up
    row = runner._failed_row(("seed000000", {"alpha": 0.0, "direction": 0}), {}, "ValueError: x", {}, False)
    assert row["reference_kind"] == "own_sampler"
    assert row["reference_path"] == "images/seed000000/reference_own_sampler.png"

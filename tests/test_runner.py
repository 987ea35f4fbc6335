"""The runner end to end on the tiny model: rows, images, figures, tables, provenance,
resume after a real process kill, a two-job Hydra multirun, and config composition."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from attnedit.cli import compose
from attnedit.runner import Runner, case_id
from conftest import run_overrides

BIN = Path(sys.executable).parent


def test_quickstart_is_the_default_and_real_experiments_compose():
    cfg = compose("config", [])
    assert cfg.name == "quickstart" and cfg.model.name == "shapes_ddpm" and not cfg.model.random_weights
    assert cfg.model.path.endswith("assets/shapes_ddpm") and "factors" in cfg.metrics
    assert cfg.method.directions == 4 and len(cfg.method.alphas) == 5 and 0.0 in cfg.method.alphas
    cfg = compose("config", ["experiment=celebahq_sad"])
    assert (cfg.model.path, cfg.model.num_inference_steps) == ("google/ddpm-ema-celebahq-256", 50)
    assert (cfg.method.directions, cfg.dataset.num_samples) == (15, 100)
    for lsun in ("church", "bedroom", "cat"):
        cfg = compose("config", ["experiment=celebahq_sad", f"model=ddpm_{lsun}"])
        assert cfg.model.path == f"google/ddpm-ema-{lsun}-256"


@pytest.fixture(scope="module")
def finished_run(tiny_ddpm_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    cfg = compose("config", run_overrides(root, tiny_ddpm_dir))
    runner = Runner(cfg)
    return cfg, runner, runner.run()


def test_rows_images_figures_tables_and_manifest(finished_run):
    cfg, runner, run_dir = finished_run
    frame = pd.read_parquet(run_dir / "cases")
    assert len(frame) == 2 * 2 * 2 and frame.case_id.is_unique
    for column in ("sample_id", "method", "direction", "label", "alpha", "alpha_scale", "position", "layers",
                   "window_lo", "window_hi", "ssim", "psnr", "seconds_per_case", "image_path", "random_backbone"):
        assert column in frame, column
    assert set(frame.alpha) == {-0.4, 0.4} and set(frame.direction) == {0, 1}
    assert (frame.alpha_scale == "token_norm").all() and not frame.random_backbone.any()
    assert frame.model_random_weights.all()
    for path in frame.image_path:
        assert (run_dir / path).exists()
    assert sorted(p.name for p in (run_dir / "figures").glob("*.png")) == [
        "alpha_sweep_seed000000.png", "alpha_sweep_seed000001.png"]
    for suffix in ("md", "csv", "tex"):
        assert (run_dir / "tables" / f"summary.{suffix}").exists()
    summary = pd.read_csv(run_dir / "tables" / "by_direction.csv")
    assert len(summary) == 4 and (summary.n == 2).all()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["signature"] == run_dir.name
    assert manifest["versions"]["torch"] == torch.__version__.split("+")[0] or manifest["versions"]["torch"]
    assert manifest["model"]["weights_sha256_16"] and manifest["model"]["path"] == str(cfg.model.path)
    assert "revision" in manifest["git"] and manifest["config"]["method"]["alphas"] == [-0.4, 0.4]


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
    again = Runner(cfg).run()
    assert again == run_dir and sorted((run_dir / "cases").glob("*.parquet")) == parts


def _cli(*args, root: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([str(BIN / "attnedit-run"), *args], cwd=root, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_complete_rows(tiny_ddpm_dir, tmp_path):
    overrides = run_overrides(tmp_path, tiny_ddpm_dir, "dataset.num_samples=4", "batch_size=1")
    process = _cli(*overrides, root=tmp_path)
    cases_dir = None
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        found = list(tmp_path.glob("results/runs/*/*/cases/*.parquet"))
        if len(found) >= 2:
            cases_dir = found[0].parent
            break
        time.sleep(0.2)
    assert cases_dir is not None, "the run wrote no rows in time"
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = pd.read_parquet(cases_dir)
    assert 2 <= len(partial) < 16, "the kill should land part way"

    resumed = _cli(*overrides, root=tmp_path)
    output, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, output
    assert "resuming" in output and output.strip().splitlines()[-1] == f"run dir: {cases_dir.parent}"
    frame = pd.read_parquet(cases_dir)
    assert len(frame) == 16 and frame.case_id.is_unique
    assert set(partial.case_id) <= set(frame.case_id)
    merged = partial.merge(frame, on="case_id", suffixes=("_before", "_after"))
    assert np.array_equal(merged.psnr_before, merged.psnr_after), "finished rows are never rewritten"


@pytest.mark.slow
def test_two_job_multirun(tiny_ddpm_dir, tmp_path):
    overrides = run_overrides(tmp_path, tiny_ddpm_dir, "dataset.num_samples=1", "method.directions=1")
    process = _cli("-m", *[o for o in overrides if not o.startswith("method.alphas")],
                   "method.alphas=[0.2],[0.4]", root=tmp_path)
    output, _ = process.communicate(timeout=400)
    assert process.returncode == 0, output
    run_dirs = [line.removeprefix("run dir: ") for line in output.splitlines() if line.startswith("run dir: ")]
    assert len(run_dirs) == 2 and len(set(run_dirs)) == 2
    alphas = sorted(float(pd.read_parquet(Path(d) / "cases").alpha.iloc[0]) for d in run_dirs)
    assert alphas == [0.2, 0.4]


def _grid_of(fig) -> list[list]:
    """The figure's axes as rows of columns, ordered by their position on the canvas."""
    axes = sorted(fig.axes, key=lambda ax: (-round(ax.get_position().y0, 4), round(ax.get_position().x0, 4)))
    rows = sorted({round(ax.get_position().y0, 4) for ax in axes}, reverse=True)
    return [[ax for ax in axes if round(ax.get_position().y0, 4) == y] for y in rows]


def test_alpha_sweep_and_cross_dataset_figures_have_the_grid_layout(finished_run, tmp_path):
    """Rows = directions, columns = negative alphas, the unedited sample, positive alphas;
    each cell shows the PNG of its case; cells are square; the saved PNG is the declared size."""
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    from attnedit.plots import alpha_sweep_grid, cross_dataset_grid

    _, _, run_dir = finished_run
    frame = pd.read_parquet(run_dir / "cases")
    sample = frame[frame.sample_id == "seed000000"]
    fig = alpha_sweep_grid(sample, run_dir)
    grid = _grid_of(fig)
    # expected from the rows alone: directions 0, 1 by rows; alphas -0.4, (unedited), +0.4
    assert [len(row) for row in grid] == [3, 3]
    for r, direction in enumerate([0, 1]):
        for c, alpha in enumerate([-0.4, None, 0.4]):
            path = sample.reference_path.iloc[0] if alpha is None else \
                sample[(sample.direction == direction) & (sample.alpha == alpha)].image_path.iloc[0]
            shown = np.asarray(grid[r][c].images[0].get_array())
            assert np.array_equal(shown, np.asarray(Image.open(run_dir / path))), (r, c)
    assert [ax.get_title() for ax in grid[0]] == ["α=-0.4", "unedited", "α=+0.4"]
    fig.canvas.draw()  # imshow keeps the aspect at draw time
    for ax in fig.axes:  # square cells: the images are square
        box = ax.get_window_extent()
        assert box.width == pytest.approx(box.height, rel=0.02)
    saved = Image.open(run_dir / "figures" / "alpha_sweep_seed000000.png").size
    assert saved == tuple(round(v * 100) for v in fig.get_size_inches())  # dpi 100, nothing cropped
    plt.close(fig)

    fig = cross_dataset_grid([run_dir, run_dir], directions=2)
    grid = _grid_of(fig)
    assert [len(row) for row in grid] == [3] * 4  # 2 runs x 2 directions, 2 alphas + unedited
    assert [ax.get_ylabel().split("dir ")[-1] for ax in (row[0] for row in grid)] == ["0", "1", "0", "1"]
    assert grid[0][1].get_title() == "unedited"
    plt.close(fig)


def test_unset_required_key_is_one_clear_error(tiny_ddpm_dir, tmp_path, capsys):
    from omegaconf.errors import MissingMandatoryValue

    from attnedit.cli import _fail

    cfg = compose("config", run_overrides(tmp_path, tiny_ddpm_dir, "dataset=image_folder"))
    with pytest.raises(MissingMandatoryValue) as err:
        Runner(cfg)
    with pytest.raises(SystemExit):
        _fail(err.value)
    assert capsys.readouterr().err.strip() == (
        "attnedit: error: the config key 'dataset.root' has no value; pass dataset.root=<value> on the command line")


def test_tables_of_runs_of_two_models_draw_the_cross_dataset_figure(finished_run, tiny_ddpm_dir, tmp_path, capsys):
    """lsun_sad's path: attnedit-tables over runs of different models -> comparison + figure."""
    from attnedit.cli import tables

    cfg, _, run_dir = finished_run
    other = compose("config", run_overrides(tmp_path, tiny_ddpm_dir, "model.name=tiny_ddpm_b", "dataset.num_samples=1"))
    other_dir = Runner(other).run()
    tables([str(run_dir), str(other_dir), "--out", str(tmp_path / "cmp")])
    printed = capsys.readouterr().out
    assert f"figure: {(tmp_path / 'cmp' / 'cross_dataset.png').resolve()}" in printed
    from PIL import Image

    assert Image.open(tmp_path / "cmp" / "cross_dataset.png").size == (360, 520)  # 2 models x 2 dirs, 3 columns

"""The runner end to end on the tiny model: rows, images, figures, tables, provenance,
cost, the numerical floor, resume after a real process kill, a two-job Hydra multirun
that resumes when rerun, and config composition."""

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

from attnedit.config import compose
from attnedit.run.runner import Runner, case_id
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
    """2 samples x 2 directions x 3 alphas (one of them 0) in batches of 4: batches mix samples."""
    root = tmp_path_factory.mktemp("run")
    cfg = compose("config", run_overrides(root, tiny_ddpm_dir, "method.alphas=[-0.4,0.0,0.4]", "batch_size=4"))
    runner = Runner(cfg)
    return cfg, runner, runner.run()


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
        "alpha_sweep_seed000000.png", "alpha_sweep_seed000001.png"]
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


def _png(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path), dtype=np.float64) / 255.0


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
        rms = np.sqrt(np.mean((_png(run_dir / row.image_path) - _png(run_dir / row.reference_path)) ** 2))
        assert abs(rms - 10 ** (-row.psnr / 20)) <= 1 / 255 + 1e-12, row.case_id
    for sid in frame.sample_id.unique():  # and each reference is that sample's unedited image
        own = runner.backend.reference([runner.dataset.load(sid)])[0].permute(1, 2, 0).double().numpy()
        assert np.abs(_png(run_dir / "images" / sid / "reference.png") - own).max() <= 1 / 255 + 1e-3


def test_cost_and_numerical_floor_in_the_manifest_and_titles(finished_run):
    from attnedit.report.marks import floor_title

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
    assert floor["edit"]["alpha"] == 0.0 and floor["ssim_min"] > 0.99
    line = floor_title(floor)
    assert line.startswith("[numerical floor") and "SSIM >= " in line
    for name in ("summary", "by_direction", "editing_time"):
        assert line in (run_dir / "tables" / f"{name}.md").read_text().splitlines()[0], name


def test_numerical_floor_goes_through_the_edit_path(tiny_ddpm_dir):
    """measure_floor vs numpy float64 PSNR of the same alpha = 0 batch, hooks active."""
    import contextlib

    from attnedit.backends.ddpm import DDPMBackend
    from attnedit.data.base import Sample
    from attnedit.methods.sad import SAD
    from attnedit.run.numerical_floor import measure_floor

    backend = DDPMBackend(str(tiny_ddpm_dir), device="cpu", num_inference_steps=5)
    method = SAD(directions=1, alphas=[0.4])
    method.setup(backend)
    states, control = [], method.control

    @contextlib.contextmanager
    def recording(backend, edits):
        with control(backend, edits) as state:
            states.append(state)
            yield state

    method.control = recording
    samples = [Sample("a", seed=1), Sample("b", seed=2)]
    refs = backend.reference(samples)
    floor = measure_floor(backend, method, samples, batch_size=3, references=refs)
    assert states and all(list(s.applied.values()) == [[600]] for s in states)  # alpha 0, hooks applied
    with method.control(backend, [{**method.edits()[0], "alpha": 0.0}] * 3) as state:
        images = backend.generate([samples[i] for i in (0, 1, 0)], state).double().numpy()
    mse = ((images - refs[[0, 1, 0]].double().numpy()) ** 2).reshape(3, -1).mean(axis=1)
    assert floor["batch_size"] == 3 and floor["edit"]["alpha"] == 0.0
    assert floor["identical"] is bool(mse.max() == 0)
    if mse.max() > 0:
        assert floor["psnr_min"] == pytest.approx(10 * math.log10(1 / mse.max()), abs=1e-3)


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
    manifest = json.loads((cases_dir.parent / "manifest.json").read_text())
    assert len(manifest["resumes"]) == 1 and manifest["resumes"][0]["started"] >= manifest["created"]
    assert manifest["cost"]["sessions"][0]["cases"] == 16 - len(partial)  # the killed process never finished


@pytest.mark.slow
def test_two_job_multirun_and_its_rerun_resumes_every_job(tiny_ddpm_dir, tmp_path):
    overrides = run_overrides(tmp_path, tiny_ddpm_dir, "dataset.num_samples=1", "method.directions=1",
                              "numerical_floor.samples=0")
    command = ["-m", *[o for o in overrides if not o.startswith("method.alphas")], "method.alphas=[0.2],[0.4]"]
    outputs = []
    for _ in range(2):  # the same command again: a new sweep folder, so a new W&B group
        process = _cli(*command, root=tmp_path)
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

    from attnedit.report.plots import alpha_sweep_grid, cross_dataset_grid

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

    from attnedit.cli.console import fail as _fail

    cfg = compose("config", run_overrides(tmp_path, tiny_ddpm_dir, "dataset=image_folder"))
    with pytest.raises(MissingMandatoryValue) as err:
        Runner(cfg)
    with pytest.raises(SystemExit):
        _fail(err.value)
    assert capsys.readouterr().err.strip() == (
        "attnedit: error: the config key 'dataset.root' has no value; pass dataset.root=<value> on the command line")


def test_tables_of_runs_of_two_models_draw_the_cross_dataset_figure(finished_run, tiny_ddpm_dir, tmp_path, capsys):
    """lsun_sad's path: attnedit-tables over runs of different models -> comparison + figure."""
    from attnedit.cli.tables import main as tables

    cfg, _, run_dir = finished_run
    other = compose("config", run_overrides(tmp_path, tiny_ddpm_dir, "model.name=tiny_ddpm_b", "dataset.num_samples=1"))
    other_dir = Runner(other).run()
    assert 0.0 not in other.method.alphas and "numerical floor" in (other_dir / "tables" / "summary.md").read_text()
    tables([str(run_dir), str(other_dir), "--out", str(tmp_path / "cmp")])
    printed = capsys.readouterr().out
    assert f"figure: {(tmp_path / 'cmp' / 'cross_dataset.png').resolve()}" in printed
    from PIL import Image

    # 2 models x 2 dirs, 3 columns of 1.2 in, + 0.6 in for the title naming model, layer and alpha scale (14.8)
    assert Image.open(tmp_path / "cmp" / "cross_dataset.png").size == (360, 540)

"""The procedural shapes data, the shipped trained DDPM and factor regressor, and the
factor benchmark's scores (against direct numpy computations on planted changes)."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pandas as pd
import pytest
import torch

from attnedit.assets import ASSETS_DIR, asset_path
from attnedit.data.shapes import (
    FACTOR_RANGES,
    FACTORS,
    SHAPES,
    TRIANGLE_SCALE,
    ShapeFactors,
    ShapesDataset,
    draw_factors,
    factors_of_seed,
    hue_to_rgb,
    render,
)
from attnedit.errors import ConfigError, WeightsNotFoundError
from attnedit.factors.accuracy import circular_difference, factor_accuracy, fit_factors
from attnedit.factors.benchmark import direction_scores, method_summary
from attnedit.metrics.factors import factor_changes

# Stated thresholds for the shipped weights, with room for 16-sample noise. Measured on 256
# samples (experiments/shapes_ddpm/model_report.md): regressor 1.00 on renderings, generated
# clean share 0.90, agreement 0.91-1.00 per factor; a 60-step-trained model: 0.00 and 0.00-0.44.
REGRESSOR_REAL_ACCURACY = 0.95  # every factor, held-out rendered images
GENERATED_CLEAN_SHARE = 0.7  # generated samples within RMSE 0.05 of a clean rendering
GENERATED_AGREEMENT = 0.6  # every factor: regressor within tolerance of the rendering fit


# -- the dataset ---------------------------------------------------------------------------
def test_dataset_is_deterministic_by_seed():
    data = ShapesDataset(num_samples=3, first_seed=7)
    assert data.sample_ids() == ["shapes000007", "shapes000008", "shapes000009"]
    a, b = data.load("shapes000008"), ShapesDataset(num_samples=1, first_seed=8).load("shapes000008")
    assert torch.equal(a.image, b.image) and a.fields == b.fields
    assert not torch.equal(a.image, data.load("shapes000009").image)
    assert a.image.shape == (3, 32, 32) and a.category == SHAPES[a.fields["shape"]]
    with pytest.raises(KeyError, match="not a shapes sample id"):
        data.load("seed000001")
    with pytest.raises(ConfigError, match="num_samples"):
        ShapesDataset(num_samples=0)


def test_hue_to_rgb_equals_colorsys():
    hues = np.random.default_rng(0).uniform(0, 1, 500)
    expected = np.array([colorsys.hsv_to_rgb(h, 1.0, 1.0) for h in hues])
    np.testing.assert_allclose(hue_to_rgb(hues), expected, atol=1e-12)


def coverage_of(image: np.ndarray, colour: np.ndarray, background: float) -> np.ndarray:
    """Per pixel, how much of it the shape covers: image = c * colour + (1 - c) * background."""
    channel = int(np.argmax(np.abs(colour - background)))
    return (image[channel] - background) / (colour[channel] - background)


@pytest.mark.parametrize("seed", range(12))
def test_factors_are_recovered_from_the_rendered_pixels(seed):
    """Each factor read back from the image by its definition, without the renderer's code."""
    factors = factors_of_seed(seed)
    resolution = 128  # fine pixels: area and centroid close to their continuous values
    image = render(factors, resolution)[0]
    f = {k: v.item() for k, v in factors.as_dict().items()}
    # background: the corner pixels, exactly; colour: the centre pixel, exactly.
    np.testing.assert_array_equal(image[:, 0, 0], [f["background"]] * 3)
    colour = np.array(colorsys.hsv_to_rgb(f["hue"], 1.0, 1.0))
    centre = image[:, int(f["pos_y"] * resolution), int(f["pos_x"] * resolution)]
    np.testing.assert_allclose(centre, colour, atol=1e-12)
    coverage = coverage_of(image, colour, f["background"])
    area = coverage.sum() / resolution**2
    s, t = f["size"], TRIANGLE_SCALE * f["size"]
    areas = {"circle": math.pi * s**2, "square": 4 * s**2, "triangle": 3 * math.sqrt(3) / 4 * t**2}
    assert area == pytest.approx(areas[SHAPES[f["shape"]]], rel=0.03)
    ys, xs = np.mgrid[0:resolution, 0:resolution]
    cx, cy = ((xs + 0.5) * coverage).sum() / coverage.sum(), ((ys + 0.5) * coverage).sum() / coverage.sum()
    # the triangle's centroid is its centre (the circumcentre of an equilateral triangle)
    assert (cx / resolution, cy / resolution) == pytest.approx((f["pos_x"], f["pos_y"]), abs=0.5 / resolution)
    # shape: from the fill ratio of the bounding box (circle pi/4, square 1, triangle 1/2)
    rows, cols = np.nonzero(coverage > 0.5)
    fill = (coverage > 0.5).sum() / ((np.ptp(rows) + 1) * (np.ptp(cols) + 1))
    assert min(range(3), key=lambda k: abs(fill - (math.pi / 4, 1.0, 0.5)[k])) == f["shape"]


def test_fit_recovers_the_factors_of_renderings_from_a_perturbed_start():
    rng = np.random.default_rng(3)
    truth = draw_factors(rng, 24)
    start = ShapeFactors(
        shape=rng.integers(0, 3, 24), size=truth.size + 0.01, hue=(truth.hue + 0.03) % 1,
        pos_x=truth.pos_x - 0.03, pos_y=truth.pos_y + 0.03, background=truth.background - 0.03,
    )  # fmt: skip
    fitted, residual = fit_factors(render(truth), start)
    accuracy = factor_accuracy(fitted, truth)
    assert min(accuracy.values()) >= 0.95, accuracy
    assert np.median(residual) < 0.01


# -- the factor changes a metric reports ---------------------------------------------------
def test_factor_changes_wrap_hue_and_take_the_shape_distance():
    ref = {"shape_probs": np.array([[1.0, 0, 0], [0.2, 0.8, 0]]), "hue": np.array([0.95, 0.5]),
           "size": np.array([0.12, 0.2]), "pos_x": np.array([0.5, 0.5]), "pos_y": np.array([0.3, 0.3]),
           "background": np.array([0.1, 0.6])}  # fmt: skip
    edit = {**ref, "shape_probs": np.array([[0.0, 0, 1], [0.2, 0.8, 0]]), "hue": np.array([0.05, 0.4]),
            "size": np.array([0.24, 0.2])}  # fmt: skip
    d = factor_changes(edit, ref)
    np.testing.assert_allclose(d["d_hue"], [0.1, -0.1], atol=1e-12)  # 0.95 -> 0.05 is +0.1 turn
    np.testing.assert_allclose(d["d_shape"], [1.0, 0.0])
    np.testing.assert_allclose(d["d_size"], [1.0, 0.0])  # the whole range
    assert np.all(d["d_pos_x"] == 0) and set(d) == {f"d_{k}" for k in FACTORS}
    assert circular_difference(0.0, 0.75) == pytest.approx(0.25)


# -- the benchmark's scores on planted changes ---------------------------------------------
def planted_frame() -> tuple[pd.DataFrame, dict]:
    """Two methods; per direction a planted response of every factor to alpha."""
    rng = np.random.default_rng(0)
    alphas = [-1.0, -0.5, 0.0, 0.5, 1.0]
    plans = {
        ("a", 0): {"pos_x": 0.30, "hue": 0.02},  # pos_x, linear
        ("a", 1): {"background": -0.2, "size": 0.15, "pos_y": 0.1},  # background, entangled
        ("b", 0): {"hue": 0.05, "pos_x": 0.05, "pos_y": 0.05, "size": 0.05, "background": 0.05},
    }
    rows = []
    for (method, direction), slopes in plans.items():
        for sample in range(6):
            for alpha in alphas:
                row = {"method": method, "direction": direction, "label": f"{method}{direction}",
                       "sample_id": f"s{sample}", "alpha": alpha}  # fmt: skip
                for k in FACTORS:
                    if k == "shape":
                        row["d_shape"] = 0.0 if alpha == 0 else abs(rng.normal(0, 0.01))
                    else:
                        row[f"d_{k}"] = slopes.get(k, 0.0) * alpha + (0 if alpha == 0 else rng.normal(0, 0.01))
                rows.append(row)
    return pd.DataFrame(rows), plans


def direct_scores(group: pd.DataFrame) -> dict:
    """The benchmark's definitions computed from scratch with numpy (R^2 as r^2)."""
    edits = group[group.alpha != 0]
    change = {k: np.abs(edits[f"d_{k}"].to_numpy()).mean() for k in FACTORS}
    dominant = max(change, key=change.get)
    alphas = np.array(sorted(group.alpha.unique()))
    means = np.array([group[group.alpha == a][f"d_{dominant}"].mean() for a in alphas])
    r = np.corrcoef(alphas, means)[0, 1]
    slope = np.cov(alphas, means, bias=True)[0, 1] / alphas.var()
    return {"dominant": dominant, "share": change[dominant] / sum(change.values()), "linearity": r**2,
            "slope": slope, "total": sum(change.values())}  # fmt: skip


def test_benchmark_scores_equal_a_direct_computation_on_planted_changes():
    frame, plans = planted_frame()
    scores = direction_scores(frame).set_index(["method", "direction"])
    assert len(scores) == 3
    for (method, direction), group in frame.groupby(["method", "direction"]):
        want, got = direct_scores(group), scores.loc[(method, direction)]
        assert got.dominant == want["dominant"]
        for key in ("share", "linearity", "slope", "total"):
            assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key
    assert scores.loc[("a", 0)].dominant == "pos_x" and scores.loc[("a", 0)].linearity > 0.99
    assert scores.loc[("a", 1)].dominant == "background"
    assert scores.loc[("a", 0)].share > scores.loc[("a", 1)].share > scores.loc[("b", 0)].share
    summary = method_summary(direction_scores(frame)).set_index("method")
    assert summary.loc["a", "distinct_dominant"] == 2 and summary.loc["b", "directions"] == 1
    assert summary.loc["a", "share"] == pytest.approx(np.mean([scores.loc[("a", d)].share for d in (0, 1)]))


def test_benchmark_refuses_rows_without_factor_columns():
    with pytest.raises(ValueError, match="d_shape"):
        direction_scores(pd.DataFrame({"method": ["sad"], "direction": [0], "alpha": [1.0], "ssim": [0.9]}))


# -- the shipped weights -------------------------------------------------------------------
def test_shipped_weights_are_small_and_missing_assets_say_what_to_do():
    files = [p for p in (ASSETS_DIR / "shapes_ddpm").rglob("*.safetensors")]
    assert len(files) == 1 and files[0].stat().st_size <= 20 * 2**20
    assert (ASSETS_DIR / "shapes_regressor" / "model.safetensors").stat().st_size <= 20 * 2**20
    with pytest.raises(WeightsNotFoundError, match="experiments/shapes_ddpm"):
        asset_path("no_such_model")


@pytest.fixture(scope="module")
def regressor():
    from attnedit.factors.regressor import load_regressor

    return load_regressor(asset_path("shapes_regressor"))


def test_shipped_regressor_reads_held_out_renderings(regressor):
    from attnedit.factors.regressor import as_factors

    truth = draw_factors(np.random.default_rng([424242]), 256)
    predicted = as_factors(regressor.predict(torch.from_numpy(render(truth)).float()))
    accuracy = factor_accuracy(predicted, truth)
    assert min(accuracy.values()) >= REGRESSOR_REAL_ACCURACY, accuracy


def test_shipped_ddpm_samples_recognizable_shapes(regressor):
    """A few generated samples: each is close to a clean rendering, and the regressor's
    factors agree with the rendering that fits it."""
    from attnedit.backends.ddpm import DDPMBackend
    from attnedit.factors.regressor import as_factors

    backend = DDPMBackend(asset_path("shapes_ddpm"), name="shapes_ddpm", device="cpu", num_inference_steps=20)
    assert backend.image_shape == (3, 32, 32) and set(backend.self_attention_layers()) >= {"mid_block.attentions.0"}
    images = backend.denoise(backend.initial_noise(list(range(900, 916)))).double().numpy()
    predicted = as_factors(regressor.predict(torch.from_numpy(images).float()))
    fitted, residual = fit_factors(images, predicted)
    assert (residual <= 0.05).mean() >= GENERATED_CLEAN_SHARE, residual
    agreement = factor_accuracy(predicted, fitted)
    assert min(agreement.values()) >= GENERATED_AGREEMENT, agreement


def test_factor_metric_reads_a_planted_position_change(regressor):
    from attnedit.metrics.registry import build_metric

    metric = build_metric("factors", path=asset_path("shapes_regressor"))
    base = draw_factors(np.random.default_rng([77]), 8)
    base = ShapeFactors(**{**base.as_dict(), "pos_x": np.full(8, 0.42)})
    moved = ShapeFactors(**{**base.as_dict(), "pos_x": np.full(8, 0.58)})
    out = metric(torch.from_numpy(render(moved)).float(), torch.from_numpy(render(base)).float())
    span = FACTOR_RANGES["pos_x"][1] - FACTOR_RANGES["pos_x"][0]
    np.testing.assert_allclose(out["d_pos_x"].numpy(), 0.16 / span, atol=0.04)
    for k in ("size", "hue", "pos_y", "background", "shape"):
        assert out[f"d_{k}"].abs().max() < 0.04, k
    torch.testing.assert_close(out["factor_change"], sum(out[f"d_{k}"].abs() for k in FACTORS))


# -- the default run and the benchmark recipe ----------------------------------------------
def test_factor_benchmark_recipe_composes_one_run_per_method():
    from attnedit.config import compose

    for choice, target in [("sad", "SAD"), ("pullback", "Pullback"), ("pullback_move", "PullbackMove"),
                           ("hspace_pca", "HSpacePCA"), ("attn_input_pca", "AttnInputPCA"), ("random", "RandomDirections")]:
        cfg = compose("config", ["experiment=shapes_factors", f"method={choice}"])
        assert cfg.method._target_.endswith("." + target) and cfg.model.name == "shapes_ddpm"
        assert list(cfg.metrics) == ["ssim", "psnr", "factors"] and cfg.method.alphas == [-0.6, -0.3, 0.0, 0.3, 0.6]
        edits_h_or_x = choice in ("pullback", "pullback_move", "hspace_pca")  # mid-block output / x_t, no attention layer
        assert cfg.method.get("layers") == (None if edits_h_or_x else ["down_blocks.1.attentions.0"])
    # other models keep the mid block by default; quickstart's pullback has no stray keys
    assert compose("config", ["model=ddpm_celebahq", "method=sad"]).method.layers == ["mid_block.attentions.0"]
    assert "layers" not in compose("config", ["method=pullback"]).method


def test_quickstart_on_the_shipped_model_reports_the_factor_benchmark(tmp_path):
    from attnedit.config import compose
    from attnedit.run.runner import Runner

    cfg = compose("config", [f"paths.root_dir={tmp_path}", "dataset.num_samples=2", "method.directions=2",
                             "method.alphas=[-0.6,0.0,0.6]", "batch_size=6", "device=cpu", "progress=false"])
    run_dir = Runner(cfg).run()
    frame = pd.read_parquet(run_dir / "cases")
    assert len(frame) == 2 * 2 * 3 and not frame.model_random_weights.any()
    unedited = frame[frame.alpha == 0]
    assert unedited[[f"d_{k}" for k in FACTORS]].abs().to_numpy().max() < 0.01  # alpha 0 = the unedited sample
    scores = pd.read_csv(run_dir / "tables" / "factor_directions.csv")
    assert list(scores.direction) == [0, 1] and set(scores.dominant) <= set(FACTORS)
    want = direct_scores(frame[frame.direction == 0])
    assert scores.share[0] == pytest.approx(want["share"], rel=1e-3)  # the CSV rounds to 4 digits
    assert (run_dir / "figures" / "factor_benchmark.png").stat().st_size > 0
    # Means over alphas leave the alpha-0 rows (no edit, PSNR ~130 dB) out; per-alpha tables keep them.
    summary = pd.read_csv(run_dir / "tables" / "summary.csv")
    edits = frame[frame.alpha != 0]
    assert summary.n[0] == len(edits) == 8
    assert summary.psnr_mean[0] == pytest.approx(edits.psnr.mean(), rel=1e-12)  # CSV: numeric columns (14.8)
    assert summary.psnr_std[0] == pytest.approx(edits.psnr.std(ddof=0), rel=1e-12)
    by_direction = pd.read_csv(run_dir / "tables" / "by_direction.csv")
    assert sorted(by_direction.alpha.unique()) == [-0.6, 0.0, 0.6]
    assert "alpha = 0 rows (no edit) left out" in (run_dir / "tables" / "summary.md").read_text()


def test_real_shapes_images_are_edited_through_inversion(tmp_path):
    from attnedit.config import compose
    from attnedit.run.runner import Runner

    cfg = compose("config", [f"paths.root_dir={tmp_path}", "dataset=shapes", "dataset.num_samples=2", "method.directions=1",
                             "method.alphas=[0.0,0.6]", "batch_size=4", "device=cpu", "progress=false", "save_images=false"])
    frame = pd.read_parquet(Runner(cfg).run() / "cases")
    data = ShapesDataset(num_samples=2)
    assert sorted(frame.sample_id.unique()) == data.sample_ids()
    assert dict(zip(frame.sample_id, frame.category)) == {i: data.load(i).category for i in data.sample_ids()}
    assert frame[frame.alpha == 0][[f"d_{k}" for k in FACTORS]].abs().to_numpy().max() < 0.01

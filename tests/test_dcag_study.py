"""The DCAG study end to end on tiny models: the piebench_dcag experiment through the
runner (tiny Qwen-Image-Edit pipeline, PIE-Bench fixture in the official format, random
metric backbones), then `attnedit-tables` over its runs. Every number in the tables is
checked against an aggregation of the stored rows written here; the published rows
must carry their "secondary source, unverified" mark. A synthetic 3x3 grid checks what
the tiny run cannot reach cheaply: NaN skipping, a full contour grid, extra scales."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hydra import compose as hydra_compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

from attnedit.config import REPO_ROOT, compose, conf_dir

from attnedit.cli.tables import main as tables
from attnedit.data.piebench import CATEGORY_NAMES
from attnedit.report.dcag.points import GRID_KEYS, guidance_label
from attnedit.report.dcag.study import write_report
from attnedit.report.dcag.runs import study_runs
from attnedit.report.runs import load_runs
from attnedit.errors import DataError
from attnedit.metrics.piebench import OFFICIAL_DEFAULT_METRICS
from attnedit.metrics.registry import build_metrics
from attnedit.run.runner import Runner
from attnedit.store.run_store import RunStore
from attnedit.report.marks import FUSED_ARITHMETIC_MARK, PNG_EDITS_MARK, title_marks
from attnedit.report.marks import RANDOM_BACKBONE_MARK
from piebench_fixture import write_piebench_fixture
from qwen_tiny import save_tiny_pipeline

REFERENCE = REPO_ROOT / "experiments" / "piebench_dcag" / "reference" / "dcag_piebench.csv"
IDS = ["111000000000", "211000000000"]  # categories 1 (change object) and 2 (add object)
TINY_CLIP = ("{text_config: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2},"
             " vision_config: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2},"
             " projection_dim: 16}")
SCALE = {"lpips": 1e3, "ssim": 1e2, "mse": 1e4, "psnr": 1.0, "clip": 1.0}
WHOLE = ["lpips_whole", "ssim_whole", "psnr_whole", "mse_whole"]
HEADERS = {"lpips_whole": "LPIPS whole [x10^3]", "ssim_whole": "SSIM whole [x10^2]", "psnr_whole": "PSNR whole [dB]",
           "mse_whole": "MSE whole [x10^4]", "lpips_unedit_part": "LPIPS background [x10^3]",
           "psnr_unedit_part": "PSNR background [dB]",
           "clip_similarity_target_image": "CLIP score whole [CLIP score 0-100]"}


def scale(metric: str) -> float:
    return SCALE[metric.split("_")[0]]


def mean_std(values: pd.Series, metric: str) -> tuple[float, float]:
    values = values[np.isfinite(values.astype(float))].astype(float) * scale(metric)
    return values.mean(), values.std(ddof=0)


def parse(cell: str) -> tuple[float, float]:
    mean, std = cell.split(" (")[0].split(" ± ")
    return float(mean), float(std)


def numbers(row: dict, header: str) -> tuple[float, float]:
    """(mean, std) of a cell from its numeric CSV columns (issue 14.8: no "mean ± std" strings in CSV)."""
    return float(row[f"{header}_mean"]), float(row[f"{header}_std"])


def read_table(folder, name) -> pd.DataFrame:
    return pd.read_csv(folder / "tables" / f"{name}.csv", keep_default_na=False)


# -- configs ---------------------------------------------------------------------------
def test_experiments_hold_the_papers_rows_grid_and_settings():
    rows = {}
    for row in ("none", "grag", "dcag"):
        cfg = compose("config", ["experiment=piebench_dcag", f"dcag_row={row}", "dataset.root=/data/PIE-Bench"])
        model = cfg.model
        assert (model.path, model.num_inference_steps, model.true_cfg_scale) == ("Qwen/Qwen-Image-Edit", 24, 4.0)
        assert (cfg.model.negative_prompt, cfg.model.seed, cfg.model.prompt_field) == (" ", 42, "editing_instruction")
        assert cfg.dataset.root == "/data/PIE-Bench" and cfg.dataset.first_n is None and cfg.dataset.ids is None
        assert cfg.tables.reference == str(REFERENCE)
        assert list(cfg.metrics) == [*WHOLE, "lpips_unedit_part", "ssim_unedit_part", "psnr_unedit_part",
                                     "mse_unedit_part", "clip_similarity_target_image",
                                     "clip_similarity_target_image_edit_part"]
        method = instantiate(cfg.method)  # the method alone: no model is loaded
        assert cfg.method.get("blocks") is None and cfg.method.get("steps") is None
        rows[row] = [(e.get("dk", 1.0), e.get("dv", 1.0)) for e in method.edits()]
    assert rows == {"none": [(1.0, 1.0)], "grag": [(1.10, 1.0), (1.15, 1.0)], "dcag": [(1.10, 1.15), (1.15, 1.15)]}
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):  # `-m` sweeps the three rows
        sweep = hydra_compose("config", ["experiment=piebench_dcag", "dataset.root=/d"], return_hydra_config=True)
    assert sweep.hydra.sweeper.params == {"dcag_row": "none,grag,dcag"}
    grid = compose("config", ["experiment=piebench_dcag_grid", "dataset.root=/data"])
    steps = [1.00, 1.05, 1.10, 1.15, 1.20]
    assert list(grid.method.grid.dk) == steps and list(grid.method.grid.dv) == steps
    assert grid.method.name == "dcag" and grid.batch_size == 5 and grid.model.num_inference_steps == 24


def test_official_metric_set_in_its_order():
    cfg = compose("config", ["metrics=piebench", "metric_weights=random",
                             "+metrics.structure_distance.config_overrides={depth: 1, embed_dim: 24, num_heads: 2}",
                             *(f"+metrics.{m}.config_overrides={TINY_CLIP}" for m in OFFICIAL_DEFAULT_METRICS
                               if m.startswith("clip"))])
    metrics = build_metrics(cfg.metrics)
    assert [m.name for m in metrics] == list(OFFICIAL_DEFAULT_METRICS)
    assert all(m.weights == "random(seed=0)" for m in metrics if m.name.startswith(("lpips", "clip", "structure")))


# -- the tiny study through the runner -------------------------------------------------
@pytest.fixture(scope="module")
def study(tmp_path_factory):
    base = tmp_path_factory.mktemp("dcag_study")
    model_dir = save_tiny_pipeline(base / "tiny_qwen_image_edit")
    write_piebench_fixture(base / "PIE-Bench", size=64)
    common = [
        "experiment=piebench_dcag", f"paths.root_dir={base}", f"model.path={model_dir}",
        "model.num_inference_steps=1", f"dataset.root={base / 'PIE-Bench'}",
        f"dataset.ids=[{','.join(repr(i) for i in IDS)}]",  # quoted: ids are strings, not numbers
        "metric_weights=random", "device=cpu", "progress=false",
        # lossless: the tiny model's guidance moves pixels by less than JPEG q75 keeps (the default, tested below)
        "dataset.edited_format=png",
        *(f"+metrics.{m}.config_overrides={TINY_CLIP}"
          for m in ("clip_similarity_target_image", "clip_similarity_target_image_edit_part")),
    ]
    # method=dcag with its 2-point grid (dcag_row=dcag), both grid points of both images in one batch
    dcag = Runner(compose("config", [*common, "dcag_row=dcag", "batch_size=4"])).run()
    none = Runner(compose("config", [*common, "dcag_row=none", "batch_size=2"])).run()
    return base, dcag, none


def test_edits_are_saved_and_scored_as_the_official_scripts_jpeg(tmp_path):
    """dataset.edited_format=jpeg (the default): each edit is saved as the official scripts'
    ``image.save("<id>.jpg")`` writes it (PIL, quality 75) and the row's metrics are those of
    that file: attnedit-evaluate on the saved files (read from disk) gives the same numbers."""
    from attnedit.evaluate.config import compose_config
    from attnedit.evaluate.evaluator import evaluate as score

    def evaluate(argv):
        return score(compose_config(argv))

    model_dir = save_tiny_pipeline(tmp_path / "tiny_qwen_image_edit")
    root = tmp_path / "PIE-Bench"
    write_piebench_fixture(root, size=64)
    run = Runner(compose("config", [
        "experiment=piebench_dcag", "dcag_row=none", f"paths.root_dir={tmp_path}", f"model.path={model_dir}",
        "model.num_inference_steps=1", f"dataset.root={root}", f"dataset.ids=[{','.join(repr(i) for i in IDS)}]",
        "metric_weights=random", "device=cpu", "progress=false",
        *(f"+metrics.{m}.config_overrides={TINY_CLIP}"
          for m in ("clip_similarity_target_image", "clip_similarity_target_image_edit_part")),
    ])).run()
    rows = pd.read_parquet(run / "cases")
    assert set(rows.edited_format) == {"jpeg_q75"} and rows.image_path.str.endswith(".jpg").all()
    assert PNG_EDITS_MARK not in title_marks(rows)
    mapping = json.loads((root / "mapping_file.json").read_text())
    edited = tmp_path / "edited"
    for row in rows.itertuples():  # the saved files, laid out as annotation_images/ for attnedit-evaluate
        assert Image.open(run / row.image_path).format == "JPEG"
        target = edited / mapping[row.sample_id]["image_path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((run / row.image_path).read_bytes())
    out = tmp_path / "scores.csv"
    pixel_metrics = ["psnr_whole", "mse_whole", "ssim_whole", "psnr_unedit_part", "ssim_unedit_part"]
    evaluate([f"dataset.root={root}", f"edited={edited}", "name=none", f"metrics=[{','.join(pixel_metrics)}]",
              f"out={out}", "weights=random", "progress=false", f"dataset.ids=[{','.join(IDS)}]"])
    scores = pd.read_csv(out, dtype={"file_id": str}).set_index("file_id")
    for row in rows.itertuples():
        for metric in pixel_metrics:
            assert getattr(row, metric) == pytest.approx(scores.loc[row.sample_id, f"none|{metric}"], abs=1e-6), metric


def test_the_jpeg_a_run_saves_is_pils_save_of_a_jpg_file(tmp_path):
    """encode_saved against PIL writing ``<name>.jpg`` with its defaults (the official scripts' call)."""
    import torch

    from attnedit.metrics.settings import encode_saved

    image = torch.rand(3, 48, 40, generator=torch.Generator().manual_seed(0))
    data, scored = encode_saved(image, "jpeg", 75)
    array = image.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(array).save(tmp_path / "x.jpg")  # format and quality from PIL's defaults
    assert data == (tmp_path / "x.jpg").read_bytes()
    expected = np.asarray(Image.open(tmp_path / "x.jpg").convert("RGB")).astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(scored.permute(1, 2, 0).numpy(), expected)
    _, lossless = encode_saved(image, "png")
    np.testing.assert_array_equal(lossless.permute(1, 2, 0).numpy(), array.astype(np.float32) / np.float32(255))
    assert not np.array_equal(expected, array.astype(np.float32) / np.float32(255))  # JPEG q75 is lossy


def test_rows_hold_category_scales_and_metrics(study):
    _, dcag, none = study
    frame = pd.read_parquet(dcag / "cases")
    assert len(frame) == 4 and sorted(frame.sample_id.unique()) == IDS
    assert sorted(set(zip(frame.dk, frame.dv))) == [(1.10, 1.15), (1.15, 1.15)]
    assert set(frame.category) == {"1", "2"} and set(frame.method) == {"dcag"}
    metrics = json.loads((dcag / "manifest.json").read_text())["metric_order"]
    assert len(metrics) == 10
    for metric in metrics:
        assert frame[metric].map(math.isfinite).all(), metric
    assert frame.random_backbone.all() and (frame.batch_size == 4).all()
    unedited = pd.read_parquet(none / "cases")
    assert len(unedited) == 2 and "dk" not in unedited and set(unedited.method) == {"none"}
    # the guidance changed every edit, and no edit is the source
    stock = unedited.set_index("sample_id").mse_whole
    assert (frame.mse_whole != frame.sample_id.map(stock)).all()
    assert (frame.mse_whole > 0).all() and (stock > 0).all()


def test_each_run_gets_its_own_study_tables(study):
    _, dcag, none = study
    unedited = read_table(none, "main")  # the unedited run alone: its point beside the published ones
    assert unedited.run.tolist() == ["none"] + ["not run"] * 4 and unedited.dk.tolist()[:1] == [1.0]
    for name in ("main", "grid", "by_category_lpips_whole", "by_category_lpips_unedit_part"):
        assert (dcag / "tables" / f"{name}.md").exists() and (dcag / "tables" / f"{name}.tex").exists(), name
    main = read_table(dcag, "main")
    assert main[main.run == "dcag"].guidance.tolist() == ["DCAG", "DCAG"]  # one row per grid point, not pooled
    assert (dcag / "figures" / "fidelity_vs_editability.png").exists()


@pytest.fixture(scope="module")
def report(study):
    base, dcag, none = study
    out = base / "report"
    tables([str(dcag), str(none), "--out", str(out)])
    return out, pd.concat([pd.read_parquet(dcag / "cases"), pd.read_parquet(none / "cases")], ignore_index=True)


def points_of(rows: pd.DataFrame) -> dict:
    rows = rows.assign(dk=rows.get("dk", pd.Series(1.0, index=rows.index)).fillna(1.0),
                       dv=rows.get("dv", pd.Series(1.0, index=rows.index)).fillna(1.0))
    return {(round(dk, 4), round(dv, 4)): group for (dk, dv), group in rows.groupby(["dk", "dv"])}


def test_main_table_equals_the_rows_with_published_beside(report):
    out, rows = report
    main = read_table(out, "main")
    reference = pd.read_csv(REFERENCE)
    by_point = points_of(rows)
    measured = main[main.run != "not run"]
    assert [(r.guidance, r.dk, r.dv) for r in measured.itertuples()] == [
        ("none", 1.0, 1.0), ("DCAG", 1.10, 1.15), ("DCAG", 1.15, 1.15)]
    for row in measured.to_dict("records"):
        group = by_point[(row["dk"], row["dv"])]
        assert row["n"] == len(group) == 2
        for metric in WHOLE:
            want = mean_std(group[metric], metric)
            assert numbers(row, HEADERS[metric]) == pytest.approx(want, abs=1e-9), (row["dk"], row["dv"], metric)
    for published in reference.itertuples():
        row = main[(main.dk == published.dk) & (main.dv == published.dv)].iloc[0]
        assert float(row["LPIPS published† [x10^3]"]) == pytest.approx(published.lpips_whole * 1e3, abs=0.006)
        assert float(row["SSIM published† [x10^2]"]) == pytest.approx(published.ssim_whole * 1e2, abs=0.006)
        assert float(row["PSNR published† [dB]"]) == pytest.approx(published.psnr_whole, abs=0.006)
        assert float(row["MSE published† [as transcribed, unit not stated]"]) == published.mse_whole
        assert "secondary source, unverified" in row["published source"]
    not_run = main[main.run == "not run"]
    assert [(r.guidance, r.dk, r.dv) for r in not_run.itertuples()] == [("GRAG", 1.10, 1.0), ("GRAG", 1.15, 1.0)]
    assert (not_run[HEADERS["lpips_whole"] + "_mean"] == "").all()  # nothing measured: no number
    assert "| not run " in (out / "tables" / "main.md").read_text()
    title = (out / "tables" / "main.md").read_text().splitlines()[0]
    for words in ("region: whole image", "secondary source, unverified", RANDOM_BACKBONE_MARK, "piebench_dcag",
                  FUSED_ARITHMETIC_MARK, PNG_EDITS_MARK):  # arithmetic and file format: not the official scripts'
        assert words in title, words
    assert set(rows.guidance_arithmetic.dropna()) == {"fused"}
    official = rows.assign(guidance_arithmetic=rows.guidance_arithmetic.where(rows.guidance_arithmetic.isna(), "official"))
    assert FUSED_ARITHMETIC_MARK not in title_marks(official) and FUSED_ARITHMETIC_MARK in title_marks(rows)


def test_relative_change_equals_the_paired_rows(report):
    out, rows = report
    table = read_table(out, "main_relative")
    by_point = points_of(rows)
    none = by_point[(1.0, 1.0)].set_index("sample_id")
    reference = pd.read_csv(REFERENCE).set_index(["dk", "dv"])
    for row in table.to_dict("records"):
        point = by_point[(row["dk"], row["dv"])].set_index("sample_id")
        for metric in WHOLE:
            name = metric.split("_")[0].upper()
            want = (point[metric].mean() / none.loc[point.index, metric].mean() - 1) * 100
            assert float(row[f"{name} whole Δ% measured"]) == pytest.approx(want, abs=0.051)
            published = reference.loc[(row["dk"], row["dv"])]
            want = (published[metric] / reference.loc[(1.0, 1.0)][metric] - 1) * 100
            assert float(row[f"{name} Δ% published†"]) == pytest.approx(want, abs=0.051)


def test_category_and_grid_tables_equal_the_rows(report):
    out, rows = report
    by_point = points_of(rows)
    for metric, region in (("lpips_whole", "whole image"), ("lpips_unedit_part", "background")):
        table = read_table(out, f"by_category_{metric}")
        assert f"region: {region}" in (out / "tables" / f"by_category_{metric}.md").read_text().splitlines()[0]
        for row in table.to_dict("records"):
            group = by_point[(row["dk"], row["dv"])]
            for category in ("1", "2"):
                part = group[group.category == category]
                column = f"{category} {CATEGORY_NAMES[category]} [x10^3]"
                assert float(row[f"{column}_mean"]) == pytest.approx(part[metric].mean() * 1e3, abs=1e-9)
            assert float(row["all [x10^3]_mean"]) == pytest.approx(group[metric].mean() * 1e3, abs=1e-9)
    grid = read_table(out, "grid")
    clip = [c for c in grid.columns if c.startswith("CLIP")]
    assert grid.columns.tolist().index(clip[-1]) < grid.columns.tolist().index(HEADERS["lpips_whole"] + "_mean")
    for row in grid.to_dict("records"):
        group = by_point[(row["dk"], row["dv"])]
        for metric in ("clip_similarity_target_image", "lpips_unedit_part", "psnr_unedit_part", "mse_whole"):
            assert numbers(row, HEADERS[metric]) == pytest.approx(mean_std(group[metric], metric), abs=1e-9)
    title = (out / "tables" / "grid.md").read_text().splitlines()[0]
    assert "whole image" in title and "background" in title and "edit region" in title


def test_figures_draw_the_grid_means(report):
    out, rows = report
    means = pd.read_csv(out / "tables" / "grid_means.csv")
    by_point = points_of(rows)
    assert sorted(zip(means.dk, means.dv)) == sorted(by_point)
    for record in means.to_dict("records"):
        group = by_point[(record["dk"], record["dv"])]
        assert record["lpips_whole"] == pytest.approx(group.lpips_whole.mean(), rel=1e-9)
        assert record["clip_similarity_target_image"] == pytest.approx(group.clip_similarity_target_image.mean())
    for name in ("lpips_contours.png", "fidelity_vs_editability.png"):
        with Image.open(out / "figures" / name) as image:
            assert image.size[0] > 400 and image.size[1] > 300


# -- report logic on a synthetic 3x3 grid ----------------------------------------------
SYNTHETIC = {"lpips_whole": (0.1, 0.5), "psnr_unedit_part": (15, 30), "clip_similarity_target_image": (20, 30)}


def fake_run(root, name, method, points, samples, reference=None, seed=0, nan_sample=None, metrics=SYNTHETIC):
    """A run directory like the runner writes one: manifest and rows of random metric values."""
    rng = np.random.default_rng(seed)
    store = RunStore(root / name)
    target = "attnedit.methods.base.NoEdit" if method == "none" else "attnedit.methods.bias_delta.method.BiasDelta"
    store.write_json("manifest.json", {"config": {"name": "synthetic", "method": {"_target_": target},
                                                  "tables": {"reference": reference}},
                                       "metric_order": list(metrics), "model": {"weights_sha256_16": "abc"}})
    rows = []
    for sample, category in samples:
        for point in points:
            scales = dict(zip(GRID_KEYS, (*point, 1.0, 1.0, 1.0, 1.0)[:6]))
            row = {"case_id": f"{sample}|{method}|{point}", "sample_id": sample, "category": category, "method": method,
                   **({} if method == "none" else scales), **{m: rng.uniform(*span) for m, span in metrics.items()},
                   "random_backbone": False, "model_random_weights": False}
            if sample == nan_sample:
                row["psnr_unedit_part"] = float("nan")  # an all-ones mask: the background is empty
            rows.append(row)
    store.append(rows)
    return store.run_dir


def test_synthetic_grid_nan_skipping_and_full_contours(tmp_path):
    samples = [("a", "0"), ("b", "3"), ("c", "3")]
    grid = [(dk, dv) for dk in (1.0, 1.1, 1.2) for dv in (1.0, 1.1, 1.2)]
    run = fake_run(tmp_path, "grid", "dcag", grid, samples, reference=str(REFERENCE), nan_sample="b")
    report = write_report([run])
    assert report.folder == run and len(report.figures) == 2
    rows = RunStore(run).read()
    grid_table = report.tables["grid"]
    assert len(grid_table) == 9 and grid_table.guidance.tolist()[:5] == ["none", "GRAG", "GRAG", "V only", "V only"]
    for row in grid_table.to_dict("records"):
        group = rows[(rows.dk.round(4) == row["dk"]) & (rows.dv.round(4) == row["dv"])]
        cell = row["PSNR background [dB]"]
        assert cell.endswith("(1 non-finite)")
        assert parse(cell) == pytest.approx(mean_std(group.psnr_unedit_part, "psnr"), abs=0.006)
    main = report.tables["main"]
    for row in main[main.run == "dcag"].to_dict("records"):
        group = rows[(rows.dk.round(4) == row["dk"]) & (rows.dv.round(4) == row["dv"])]
        assert parse(row["LPIPS whole [x10^3]"]) == pytest.approx(mean_std(group.lpips_whole, "lpips"), abs=0.006)
    by_category = report.tables["by_category_lpips_whole"]
    for row in by_category.to_dict("records"):
        group = rows[(rows.dk.round(4) == row["dk"]) & (rows.dv.round(4) == row["dv"])]
        for category in ("0", "3"):
            want = group[group.category == category].lpips_whole.mean() * 1e3
            assert float(row[f"{category} {CATEGORY_NAMES[category]} [x10^3]"]) == pytest.approx(want, abs=0.006)
    assert main[(main.dk == 1.1) & (main.dv == 1.0)]["published source"].str.contains("unverified").all()
    assert main[main.run == "dcag"].shape[0] == 9
    not_run = main[main.run == "not run"]  # published points off this grid: shown, nothing measured
    assert sorted(zip(not_run.dk, not_run.dv)) == [(1.1, 1.15), (1.15, 1.0), (1.15, 1.15)]
    assert (not_run["LPIPS whole [x10^3]"] == "not run").all()
    means = pd.read_csv(run / "tables" / "grid_means.csv")
    assert len(means) == 9 and means.psnr_unedit_part.notna().all()


def test_synthetic_points_off_the_plane_and_run_selection(tmp_path):
    samples = [("a", "0"), ("b", "1")]
    run = fake_run(tmp_path, "q", "dcag", [(1.1, 1.0, 1.0, 1.0, 1.3)], samples)  # dq = 1.3
    none = fake_run(tmp_path, "none", "none", [()], samples, seed=1)
    assert study_runs(load_runs([run, none])) and not study_runs(load_runs([none]))
    report = write_report([run, none], tmp_path / "out")
    main = report.tables["main"]
    assert "dq" in main and main.guidance.tolist() == ["none", "GRAG +Q"]
    assert "published source" not in main  # no reference configured
    means = pd.read_csv(tmp_path / "out" / "tables" / "grid_means.csv")
    assert list(zip(means.dk, means.dv)) == [(1.0, 1.0)]  # the dq point is off the (dk, dv) plane
    assert guidance_label(1.0, 1.2) == "V only" and guidance_label(1.1, 1.2, bq=0.9) == "DCAG +Q"


def test_reference_without_scales_is_a_clear_error(tmp_path):
    bad = tmp_path / "ref.csv"
    bad.write_text("method,lpips_whole,source\nDCAG,0.2,somewhere\n")
    run = fake_run(tmp_path, "grid", "dcag", [(1.1, 1.15)], [("a", "0")], reference=str(bad))
    with pytest.raises(DataError, match="lacks the 'dk' column"):
        write_report([run])


def test_runs_without_piebench_fidelity_metrics_get_the_grid_table(tmp_path):
    run = fake_run(tmp_path, "plain", "grag", [(1.1, 1.0), (1.2, 1.0)], [("a", None)],
                   metrics={"ssim": (0.5, 0.9), "psnr": (20, 30)})
    report = write_report([run])
    assert list(report.tables) == ["grid"] and report.figures == []
    assert report.tables["grid"].columns.tolist()[-2:] == ["SSIM whole [x10^2]", "PSNR whole [dB]"]

"""The DCAG study's recipe (piebench_dcag): its experiments hold the paper's rows, grid and
settings, the official metric set in its order; edits are saved and scored as the
official scripts' JPEG; the tiny study's rows hold category, scales and metrics; and the
same recipe with model=flux_kontext composes and runs on the tiny Kontext pipeline."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hydra import compose as hydra_compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

from attnedit.config import compose, conf_dir
from attnedit.metrics.piebench import OFFICIAL_DEFAULT_METRICS
from attnedit.metrics.registry import build_metrics
from attnedit.report.marks import PNG_EDITS_MARK, SOURCE_SIZE_EDITS_MARK, title_marks
from attnedit.run.runner import Runner
from dcag_study import IDS, REFERENCE, TINY_CLIP, WHOLE
from harness import evaluate
from piebench_fixture import write_piebench_fixture
from flux_tiny import save_tiny_pipeline as save_tiny_kontext
from qwen_tiny import save_tiny_pipeline


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


def test_edits_are_saved_and_scored_as_the_official_scripts_jpeg(tmp_path):
    """The dataset's defaults (edited_format=jpeg, saved_size=output): each edit's file is
    what the official scripts' ``image[0].save("<id>.jpg")`` writes of the stock pipeline's
    call (its PIL output at the pipeline's own size, PIL quality 75), and the row's metrics
    are attnedit-evaluate's on that file (read from disk, resized to the source there), as
    are attnedit-rescore's."""
    import torch
    from diffusers import QwenImageEditPipeline

    from attnedit.run.rescore import rescore

    model_dir = save_tiny_pipeline(tmp_path / "tiny_qwen_image_edit")
    root = tmp_path / "PIE-Bench"
    write_piebench_fixture(root, size=64)
    pixel_metrics = [f"{m}_{r}" for m in ("psnr", "ssim", "mse") for r in ("whole", "unedit_part", "edit_part")]
    edit_part = [f"+metrics.{m}_edit_part.{key}={value}" for m, cls in (("psnr", "PSNR"), ("ssim", "SSIM"), ("mse", "MSE"))
                 for key, value in (("_target_", f"attnedit.metrics.piebench.PIEBench{cls}"), ("region", "edit_part"))]
    run = Runner(compose("config", [
        "experiment=piebench_dcag", "dcag_row=none", f"paths.root_dir={tmp_path}", f"model.path={model_dir}",
        "model.num_inference_steps=1", f"dataset.root={root}", f"dataset.ids=[{','.join(repr(i) for i in IDS)}]",
        "metric_weights=random", "batch_size=1", "device=cpu", "progress=false", *edit_part,
        *(f"+metrics.{m}.config_overrides={TINY_CLIP}"
          for m in ("clip_similarity_target_image", "clip_similarity_target_image_edit_part")),
    ])).run()
    rows = pd.read_parquet(run / "cases")
    assert set(rows.edited_format) == {"jpeg_q75"} and set(rows.saved_size) == {"output"}
    assert rows.image_path.str.endswith(".jpg").all()
    assert PNG_EDITS_MARK not in title_marks(rows) and SOURCE_SIZE_EDITS_MARK not in title_marks(rows)
    mapping = json.loads((root / "mapping_file.json").read_text())

    # the official scripts' call and save (DCAG test.py L68-83) on the stock pipeline, first entry
    stock = QwenImageEditPipeline.from_pretrained(model_dir, dtype=torch.float32)
    stock.set_progress_bar_config(disable=True)
    entry = mapping[IDS[0]]
    source = Image.open(root / "annotation_images" / entry["image_path"]).convert("RGB")
    output = stock(image=source, prompt=entry["editing_instruction"], generator=torch.manual_seed(42),
                   true_cfg_scale=4.0, negative_prompt=" ", num_inference_steps=1).images[0]
    output.save(tmp_path / "official.jpg")
    saved = run / rows.set_index("sample_id").image_path[IDS[0]]
    assert output.size != source.size and Image.open(saved).size == output.size  # full size, not the source's
    assert saved.read_bytes() == (tmp_path / "official.jpg").read_bytes()

    edited = tmp_path / "edited"
    for row in rows.itertuples():  # the saved files, laid out as annotation_images/ for attnedit-evaluate
        assert Image.open(run / row.image_path).format == "JPEG"
        target = edited / mapping[row.sample_id]["image_path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((run / row.image_path).read_bytes())
    out = tmp_path / "scores.csv"
    learned = ["lpips_whole", "lpips_unedit_part"]
    evaluate([f"dataset.root={root}", f"edited={edited}", "name=none", f"metrics=[{','.join(pixel_metrics + learned)}]",
              f"out={out}", "weights=random", "progress=false", f"dataset.ids=[{','.join(IDS)}]"])
    scores = pd.read_csv(out, dtype={"file_id": str}).set_index("file_id")
    for row in rows.itertuples():
        for metric in pixel_metrics:  # one code path: the same numbers, not close ones
            assert getattr(row, metric) == scores.loc[row.sample_id, f"none|{metric}"], metric
        for metric in learned:  # the same seeded random LPIPS network, built twice
            assert getattr(row, metric) == pytest.approx(scores.loc[row.sample_id, f"none|{metric}"], abs=1e-6), metric
    before = rows.set_index("case_id")[["psnr_unedit_part", "ssim_edit_part"]]
    rescore(run, ["metrics.psnr_unedit_part.region=unedit_part", "metrics.ssim_edit_part.region=edit_part"])
    after = pd.read_parquet(run / "cases").set_index("case_id")[before.columns]
    pd.testing.assert_frame_equal(after.loc[before.index], before)


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


def test_rows_hold_category_scales_and_metrics(dcag_study_runs):
    _, dcag, none = dcag_study_runs
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


def test_piebench_dcag_recipe_runs_on_kontext(tmp_path):
    """The DCAG recipe with model=flux_kontext: config composes, the runner edits PIE-Bench
    entries with the guided tiny Kontext pipeline and stores one row per grid point."""
    cfg = compose("config", ["experiment=piebench_dcag", "model=flux_kontext"])
    assert cfg.model._target_ == "attnedit.backends.flux_kontext.FluxKontextBackend"
    assert (cfg.model.path, cfg.model.num_inference_steps, cfg.model.guidance_scale) == (
        "black-forest-labs/FLUX.1-Kontext-dev", 28, 2.5)
    assert cfg.tables.reference is None  # the published numbers are Qwen-Image-Edit's: never beside Kontext rows
    assert compose("config", ["experiment=piebench_dcag_grid"]).tables.reference.endswith("dcag_piebench.csv")
    model_dir = save_tiny_kontext(tmp_path / "tiny_kontext")
    write_piebench_fixture(tmp_path / "PIE-Bench", size=64)
    cfg = compose("config", [
        "experiment=piebench_dcag", "model=flux_kontext", f"paths.root_dir={tmp_path}", f"model.path={model_dir}",
        "model.num_inference_steps=1", "model.max_area=1024", "model.auto_resize=false",
        "model.max_sequence_length=16", f"dataset.root={tmp_path / 'PIE-Bench'}", "dataset.ids=['111000000000']",
        "metrics=fidelity", "device=cpu", "progress=false", "dcag_row=dcag", "batch_size=2",
    ])
    frame = pd.read_parquet(Runner(cfg).run() / "cases")
    assert len(frame) == 2 and set(frame.sample_id) == {"111000000000"}
    assert sorted(zip(frame.dk, frame.dv)) == [(1.10, 1.15), (1.15, 1.15)]
    assert frame.psnr.map(math.isfinite).all() and frame.psnr.nunique() == 2  # each grid point its own edit


def test_official_rows_compose_none_official_is_the_unguided_point():
    """The recipe's official table (README section 2): the multirun's jobs are the three rows,
    each with arithmetic=official; dcag_row=none_official is method dcag at (1, 1)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        sweep = hydra_compose("config", ["experiment=piebench_dcag", "dataset.root=/d"], return_hydra_config=True)
    shipped = [f"{key}={value}" for key, value in sweep.hydra.sweeper.params.items()]
    documented = ["method.arithmetic=official", "dcag_row=none_official,grag,dcag"]  # the sweeper: the last wins
    jobs = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(shipped + documented), None)[0]
    rows = {}
    for job in jobs:
        cfg = compose("config", ["experiment=piebench_dcag", "dataset.root=/d", *job])
        method = instantiate(cfg.method)
        assert {e["guidance_arithmetic"] for e in method.edits()} == {"official"}
        row = next(o.split("=")[1] for o in job if o.startswith("dcag_row="))
        rows[row] = [(e["dk"], e["dv"], e["bk"], e["bv"]) for e in method.edits()]
    assert rows == {"none_official": [(1.0, 1.0, 1.0, 1.0)], "grag": [(1.10, 1.0, 1.0, 1.0), (1.15, 1.0, 1.0, 1.0)],
                    "dcag": [(1.10, 1.15, 1.0, 1.0), (1.15, 1.15, 1.0, 1.0)]}
    alone = compose("config", ["experiment=piebench_dcag", "dcag_row=none_official", "dataset.root=/d"])
    assert alone.method.arithmetic == "official" and alone.method.name == "dcag"  # official without being told


def test_none_official_row_is_the_official_identity_rescale_in_every_call(tmp_path, monkeypatch):
    """dcag_row=none_official in bfloat16, as the official scripts run: its edit equals the
    stock pipeline's with the official lines (guided_transformers.official_block, typed from
    the official code) applied to the keys of every attention call of every transformer call;
    those lines change the keys (the identity rescale rounds), so it is not the stock edit."""
    import math
    from functools import wraps

    import torch
    from diffusers.models.transformers import transformer_qwenimage

    from guided_transformers import official_block

    model_dir = save_tiny_pipeline(tmp_path / "tiny_qwen_image_edit")
    root = tmp_path / "PIE-Bench"
    write_piebench_fixture(root, size=64)

    def edit(row, folder, *extra):
        run = Runner(compose("config", [
            "experiment=piebench_dcag", f"dcag_row={row}", f"paths.root_dir={tmp_path / folder}",
            f"model.path={model_dir}", "model.num_inference_steps=1", "model.dtype=bfloat16", f"dataset.root={root}",
            "dataset.ids=['111000000000']", "metrics=fidelity", "dataset.edited_format=png", "device=cpu",
            "progress=false", "numerical_floor.samples=0", "figures=false", *extra])).run()
        rows = pd.read_parquet(run / "cases")
        return rows, np.asarray(Image.open(run / rows.image_path.iloc[0]))

    official_rows, official = edit("none_official", "official")
    assert (official_rows.dk == 1).all() and (official_rows.dv == 1).all()
    assert set(official_rows.guidance_arithmetic) == {"official"} and set(official_rows.method) == {"dcag"}
    # compared at the pipeline's own size (saved_size=output), no downsample to the 64 px source
    # between: the identity rescale dropped moves 11.7% of these values (3.0% at 64 px)
    assert set(official_rows.saved_size) == {"output"} and official.shape[:2] == (1024, 1024)

    shapes, rescaled = {}, []
    forward = transformer_qwenimage.QwenImageTransformer2DModel.forward
    dispatch = transformer_qwenimage.dispatch_attention_fn

    @wraps(forward)
    def remember_shapes(self, *args, **kwargs):
        shapes["img"] = kwargs["img_shapes"][0]
        return forward(self, *args, **kwargs)

    def official_keys(q, k, v, **kw):  # joint sequence: text, noisy latent, condition image
        noisy, cond = math.prod(shapes["img"][0]), sum(math.prod(s) for s in shapes["img"][1:])
        text = k.shape[1] - noisy - cond
        official = official_block((k[:, :text].clone(), k[:, text:].clone()), 512, cond, 1.0, 1.0, text=True)
        rescaled.append(not torch.equal(official, k))
        return dispatch(q, official, v, **kw)

    monkeypatch.setattr(transformer_qwenimage.QwenImageTransformer2DModel, "forward", remember_shapes)
    monkeypatch.setattr(transformer_qwenimage, "dispatch_attention_fn", official_keys)
    _, expected = edit("none", "stock_with_official_lines")
    assert len(rescaled) == 2 * 2 and all(rescaled)  # 2 blocks x (cond, uncond) passes of the one step
    np.testing.assert_array_equal(official, expected)

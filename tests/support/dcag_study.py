"""The DCAG study on tiny models, read by the study's checks (tests/studies) and its
report's (tests/report): the piebench_dcag experiment through the runner (a tiny
Qwen-Image-Edit pipeline, the PIE-Bench fixture in the official format, random metric
backbones); a plugin of the root conftest: one pair of runs per session. Also the
aggregations of stored rows that the study's tables are checked against."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from attnedit.config import REPO_ROOT

REFERENCE = REPO_ROOT / "experiments" / "piebench_dcag" / "reference" / "dcag_piebench.csv"
IDS = ["111000000000", "211000000000"]  # categories 1 (change object) and 2 (add object)
TINY_CLIP = ("{text_config: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2},"
             " vision_config: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2},"
             " projection_dim: 16}")
SCALE = {"lpips": 1e3, "ssim": 1e2, "mse": 1e4, "psnr": 1.0, "clip": 1.0}
WHOLE = ["lpips_whole", "ssim_whole", "psnr_whole", "mse_whole"]


@pytest.fixture(scope="session")
def dcag_study_runs(tmp_path_factory):
    """(base folder, dcag run, none run): method=dcag with its 2-point grid (dcag_row=dcag),
    both grid points of both images in one batch, and the unedited row."""
    from attnedit.config import compose
    from attnedit.run.runner import Runner
    from piebench_fixture import write_piebench_fixture
    from qwen_tiny import save_tiny_pipeline

    base = tmp_path_factory.mktemp("dcag_study")
    model_dir = save_tiny_pipeline(base / "tiny_qwen_image_edit")
    write_piebench_fixture(base / "PIE-Bench", size=64)
    common = [
        "experiment=piebench_dcag", f"paths.root_dir={base}", f"model.path={model_dir}",
        "model.num_inference_steps=1", f"dataset.root={base / 'PIE-Bench'}",
        f"dataset.ids=[{','.join(repr(i) for i in IDS)}]",  # quoted: ids are strings, not numbers
        "metric_weights=random", "device=cpu", "progress=false",
        # lossless: the tiny model's guidance moves pixels by less than JPEG q75 keeps (the default,
        # tested in tests/studies/test_piebench_dcag.py)
        "dataset.edited_format=png",
        *(f"+metrics.{m}.config_overrides={TINY_CLIP}"
          for m in ("clip_similarity_target_image", "clip_similarity_target_image_edit_part")),
    ]
    dcag = Runner(compose("config", [*common, "dcag_row=dcag", "batch_size=4"])).run()
    none = Runner(compose("config", [*common, "dcag_row=none", "batch_size=2"])).run()
    return base, dcag, none


def scale(metric: str) -> float:
    return SCALE[metric.split("_")[0]]


def mean_std(values: pd.Series, metric: str) -> tuple[float, float]:
    values = values[np.isfinite(values.astype(float))].astype(float) * scale(metric)
    return values.mean(), values.std(ddof=0)


def read_table(folder, name) -> pd.DataFrame:
    return pd.read_csv(folder / "tables" / f"{name}.csv", keep_default_na=False)


def points_of(rows: pd.DataFrame) -> dict:
    rows = rows.assign(dk=rows.get("dk", pd.Series(1.0, index=rows.index)).fillna(1.0),
                       dv=rows.get("dv", pd.Series(1.0, index=rows.index)).fillna(1.0))
    return {(round(dk, 4), round(dv, 4)): group for (dk, dv), group in rows.groupby(["dk", "dv"])}

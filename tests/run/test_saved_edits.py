"""How a run saves a PIE-Bench edit and what it scores of it (attnedit.run.saved_edits),
against PIL and torch written out here: saved_size=output writes the pipeline's PIL
conversion of the full-size output (diffusers' numpy_to_pil) as PIL's save does and scores
the decoded file resized to the source; saved_size=source (the earlier order) resizes
first. Bad values stop with one line; titles name the earlier order."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from attnedit.config import compose
from attnedit.data.piebench import PIEBench
from attnedit.errors import ConfigError
from attnedit.report.marks import SOURCE_SIZE_EDITS_MARK, title_marks
from attnedit.run.saved_edits import saved_edit
from piebench_fixture import smooth_image, write_piebench_fixture

SIZE = (40, 40)


@pytest.fixture(scope="module")
def output() -> torch.Tensor:
    """A photo-like float image at twice the source size, off the 8-bit grid."""
    rng = np.random.default_rng(3)
    pixels = smooth_image(rng, 80).astype(np.float32) / 255 + rng.uniform(-0.002, 0.002, (80, 80, 3)).astype(np.float32)
    return torch.from_numpy(pixels).permute(2, 0, 1).clamp(0, 1).contiguous()


def pil_file(array: np.ndarray, fmt: str) -> bytes:
    """PIL's save of an HxWx3 uint8 array to a file of that type, with PIL's defaults."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def official_pixels(image: torch.Tensor) -> np.ndarray:
    """The pipeline's PIL output of a float CHW image (diffusers numpy_to_pil, float32)."""
    return (image.permute(1, 2, 0).numpy() * 255).round().astype("uint8")


def decoded(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy()).permute(2, 0, 1)


def bicubic(image: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(image[None], size=size, mode="bicubic", align_corners=False, antialias=True)[0].clamp(0, 1)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_output_order_saves_the_full_size_file_and_scores_it_resized(output, fmt):
    data, scored = saved_edit(output, SIZE, fmt, 75, "output")
    assert data == pil_file(official_pixels(output), fmt.upper())  # the official scripts' file, full size
    expected = bicubic(decoded(data).double().div(255).float(), SIZE)
    assert scored.shape == (3, *SIZE)
    torch.testing.assert_close(scored, expected, rtol=0, atol=1e-6)
    # the earlier order (resize the float output, then save at the source size) scores another image
    _, earlier = saved_edit(bicubic(output, SIZE), SIZE, fmt, 75, "source")
    assert (earlier - scored).abs().max() > (1 / 255 if fmt == "jpeg" else 0)  # PNG: 8-bit rounding apart


def test_source_order_saves_the_resized_output(output):
    resized = bicubic(output, SIZE)
    for fmt in ("jpeg", "png"):
        data, scored = saved_edit(resized, SIZE, fmt, 75, "source")
        assert data == pil_file(official_pixels(resized), fmt.upper())
        np.testing.assert_array_equal(scored.numpy(), decoded(data).numpy().astype(np.float32) / np.float32(255))


def test_the_earlier_order_is_named_in_titles_and_bad_values_stop():
    assert SOURCE_SIZE_EDITS_MARK in title_marks(pd.DataFrame({"saved_size": ["output", "source"]}))
    assert SOURCE_SIZE_EDITS_MARK not in title_marks(pd.DataFrame({"saved_size": ["output"]}))
    with pytest.raises(ConfigError, match="saved_size='native' is not one of"):
        PIEBench("/nowhere", saved_size="native")


def test_the_earlier_order_runs_and_a_resizing_model_key_needs_it(tmp_path):
    """saved_size=source: files at the source size, rows and titles name the order;
    model.resize (a resize before saving) with saved_size=output stops with one line."""
    from attnedit.run.runner import Runner
    from qwen_tiny import save_tiny_pipeline

    model_dir = save_tiny_pipeline(tmp_path / "qwen")
    write_piebench_fixture(tmp_path / "PIE-Bench", size=32)
    common = ["experiment=piebench_dcag", "dcag_row=none", f"paths.root_dir={tmp_path}", f"model.path={model_dir}",
              f"dataset.root={tmp_path / 'PIE-Bench'}", "device=cpu", "metric_weights=random", "progress=false",
              "model.num_inference_steps=1", "dataset.ids=['111000000000']",
              *(f"~metrics.{m}" for m in ("clip_similarity_target_image", "clip_similarity_target_image_edit_part"))]
    with pytest.raises(ConfigError, match="model.resize=area .* dataset.saved_size=source"):
        Runner(compose("config", [*common, "model.resize=area"]))
    run = Runner(compose("config", [*common, "model.resize=area", "dataset.saved_size=source"])).run()
    rows = pd.read_parquet(run / "cases")
    assert set(rows.saved_size) == {"source"} and SOURCE_SIZE_EDITS_MARK in title_marks(rows)
    assert Image.open(run / rows.image_path.iloc[0]).size == (32, 32)

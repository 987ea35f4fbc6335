"""Image folders (data/image_folder.py): sizes, values, and errors that name the file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from attnedit.data.image_folder import ImageFolder, load_image
from attnedit.errors import DataError


def test_image_folder_resizes_and_center_crops(tmp_path):
    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, 20:60] = 255  # the central 40x40 square is white, the sides black
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    ds = ImageFolder(str(tmp_path), size=20)
    sample = ds.load("wide")
    assert sample.image.shape == (3, 20, 20) and sample.image.dtype == torch.float32
    assert sample.image[:, :, 2:-2].min() > 0.95  # center crop keeps the white square
    assert ds.describe()["num_samples"] == 1


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match="is not a directory"):
        ImageFolder(str(tmp_path / "absent"))
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="holds no images"):
        ImageFolder(str(tmp_path))


def test_corrupt_image_names_the_file(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    ds = ImageFolder(str(tmp_path), size=16)
    with pytest.raises(DataError, match="broken.jpg"):
        ds.load("broken")


def test_load_image_values_match_pil(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    np.testing.assert_allclose(load_image(tmp_path / "x.png").permute(1, 2, 0).numpy(), pixels / 255.0, atol=1e-7)

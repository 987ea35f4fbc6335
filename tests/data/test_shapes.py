"""The procedural shapes data (data/shapes.py): deterministic by seed, and every factor
read back from the rendered pixels by its definition."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
import torch

from attnedit.data.shapes import SHAPES, TRIANGLE_SCALE, ShapesDataset, factors_of_seed, hue_to_rgb, render
from attnedit.errors import ConfigError


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

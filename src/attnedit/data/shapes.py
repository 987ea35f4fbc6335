"""Procedural images with known generative factors ("shapes"): one coloured shape on a
grey background, rendered from six independent factors, fully determined by a seed.

Factors (all drawn uniformly and independently by :func:`draw_factors`):

- ``shape``: 0 circle, 1 square, 2 triangle (categorical)
- ``size``: half-width of the shape, as a fraction of the image side
- ``hue``: hue of the shape's fully saturated, full-value colour, in turns [0, 1)
- ``pos_x``, ``pos_y``: centre of the shape, as fractions of the image side
- ``background``: grey level of the background in [0, 1]

Rendering is anti-aliased through a signed distance (one pixel of soft edge), in
float64, vectorized over a batch. Nothing is read from disk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from attnedit.data.base import Dataset, Sample
from attnedit.errors import ConfigError

SHAPES = ("circle", "square", "triangle")
# name -> (low, high) of the uniform prior; `shape` is categorical over SHAPES.
FACTOR_RANGES = {
    "size": (0.12, 0.24),
    "hue": (0.0, 1.0),
    "pos_x": (0.3, 0.7),
    "pos_y": (0.3, 0.7),
    "background": (0.1, 0.6),
}
FACTORS = ("shape",) + tuple(FACTOR_RANGES)
CIRCULAR = ("hue",)
TRIANGLE_SCALE = 1.3


@dataclass(frozen=True)
class ShapeFactors:
    """Factors of a batch: arrays of one length (``shape`` int, the others float64)."""

    shape: np.ndarray
    size: np.ndarray
    hue: np.ndarray
    pos_x: np.ndarray
    pos_y: np.ndarray
    background: np.ndarray

    def __len__(self) -> int:
        return len(self.shape)

    def as_dict(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in FACTORS}

    def __getitem__(self, index) -> ShapeFactors:
        return ShapeFactors(**{k: np.atleast_1d(v[index]) for k, v in self.as_dict().items()})


def draw_factors(rng: np.random.Generator, n: int) -> ShapeFactors:
    """``n`` independent draws of every factor from its prior."""
    values = {"shape": rng.integers(0, len(SHAPES), n)}
    for name, (low, high) in FACTOR_RANGES.items():
        values[name] = rng.uniform(low, high, n)
    return ShapeFactors(**values)


def factors_of_seed(seed: int) -> ShapeFactors:
    """The factors of one image, determined by its seed alone."""
    return draw_factors(np.random.default_rng([seed, 0x5A4E5]), 1)


def hue_to_rgb(hue: np.ndarray) -> np.ndarray:
    """Fully saturated, full-value colours [N, 3] (colorsys' HSV -> RGB, vectorized)."""
    h = (np.asarray(hue, dtype=np.float64) % 1.0) * 6.0
    channel = np.stack([(5 + h) % 6, (3 + h) % 6, (1 + h) % 6], axis=-1)  # r, g, b
    return 1.0 - np.clip(np.minimum(channel, 4 - channel), 0, 1)


def signed_distance(shape: np.ndarray, size: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Distance (in units of the image side) to the shape's outline, negative inside.

    dx, dy: offsets from the shape's centre (y grows downwards), broadcast to [N, H, W]."""
    dx, dy = np.broadcast_arrays(dx, dy)
    s = size[:, None, None]
    circle = np.hypot(dx, dy) - s
    square = np.maximum(np.abs(dx), np.abs(dy)) - s
    # Equilateral triangle pointing up, circumradius t = 1.3 s (about the area of the square's
    # inscribed circle): the largest of its three edge distances, centred on its centroid.
    k, t, up = np.sqrt(3.0) / 2, TRIANGLE_SCALE * s, -dy
    triangle = np.maximum.reduce([-up - t / 2, k * dx + up / 2 - t / 2, -k * dx + up / 2 - t / 2])
    kind = shape[:, None, None]
    return np.where(kind == 0, circle, np.where(kind == 1, square, triangle))


def render(factors: ShapeFactors, resolution: int = 32) -> np.ndarray:
    """float64 images [N, 3, R, R] in [0, 1]."""
    centres = (np.arange(resolution) + 0.5) / resolution
    dx = centres[None, None, :] - factors.pos_x[:, None, None]
    dy = centres[None, :, None] - factors.pos_y[:, None, None]
    dist = signed_distance(factors.shape, factors.size, dx, dy) * resolution  # in pixels
    coverage = np.clip(0.5 - dist, 0.0, 1.0)[:, None]  # one pixel of anti-aliased edge
    colour = hue_to_rgb(factors.hue)[:, :, None, None]
    background = factors.background[:, None, None, None]
    return coverage * colour + (1 - coverage) * background


class ShapesDataset(Dataset):
    """Real procedural images (sample i from seed ``first_seed + i``), edited through DDIM
    inversion like any image dataset; each sample carries its true factors."""

    name = "shapes"

    def __init__(self, num_samples: int = 8, first_seed: int = 0, resolution: int = 32, name: str = "shapes") -> None:
        if num_samples < 1:
            raise ConfigError(f"dataset.num_samples must be >= 1, got {num_samples}")
        if resolution < 8:
            raise ConfigError(f"dataset.resolution must be >= 8 pixels, got {resolution}")
        self.name, self.resolution = name, resolution
        self.seeds = list(range(first_seed, first_seed + num_samples))

    def sample_ids(self) -> list[str]:
        return [f"shapes{s:06d}" for s in self.seeds]

    def load(self, sample_id: str) -> Sample:
        if not sample_id.startswith("shapes") or not sample_id[6:].isdigit():
            raise KeyError(f"'{sample_id}' is not a shapes sample id (shapes<seed>)")
        seed = int(sample_id[6:])
        factors = factors_of_seed(seed)
        image = torch.from_numpy(render(factors, self.resolution)[0]).float()
        fields = {name: value.item() for name, value in factors.as_dict().items()}
        return Sample(id=sample_id, image=image, category=SHAPES[fields["shape"]], fields=fields)

    def describe(self):
        return {"name": self.name, "seeds": [self.seeds[0], self.seeds[-1]], "resolution": self.resolution}

"""How well factors are recovered: per-factor errors and accuracies against known factors,
and an analysis-by-synthesis fit that gives factors to images that have none (generated
samples): the factors whose rendering is nearest to the image.
"""

from __future__ import annotations

import numpy as np

from attnedit.data.shapes import FACTOR_RANGES, FACTORS, SHAPES, ShapeFactors, render

# A continuous factor is "recovered" within a tenth of its prior range (hue: 0.05 turn, 18 degrees).
TOLERANCE = {"size": 0.012, "hue": 0.05, "pos_x": 0.04, "pos_y": 0.04, "background": 0.05}


def circular_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a - b for values in turns, wrapped to [-0.5, 0.5)."""
    return (np.asarray(a) - np.asarray(b) + 0.5) % 1.0 - 0.5


def factor_errors(predicted: ShapeFactors, truth: ShapeFactors) -> dict[str, np.ndarray]:
    """Per image: shape 0/1 (wrong), hue circular |error| in turns, others |error|."""
    errors = {"shape": (predicted.shape != truth.shape).astype(np.float64)}
    for name in FACTOR_RANGES:
        diff = getattr(predicted, name) - getattr(truth, name)
        errors[name] = np.abs(circular_difference(getattr(predicted, name), getattr(truth, name)) if name == "hue" else diff)
    return errors


def factor_accuracy(predicted: ShapeFactors, truth: ShapeFactors) -> dict[str, float]:
    """Fraction of images whose factor is recovered (shape exactly, others within TOLERANCE)."""
    errors = factor_errors(predicted, truth)
    return {name: float(np.mean(errors[name] == 0 if name == "shape" else errors[name] <= TOLERANCE[name])) for name in FACTORS}


def _trials(current: ShapeFactors, changes: dict[str, np.ndarray]) -> ShapeFactors:
    """V copies of every image's factors with the fields in ``changes`` ([N, V] each) set: [N * V]."""
    v = next(iter(changes.values())).shape[-1]
    fields = {k: np.repeat(x, v) for k, x in current.as_dict().items()}
    fields.update({k: x.reshape(-1) for k, x in changes.items()})
    return ShapeFactors(**fields)


def _steps(current: ShapeFactors, sweep: int, grid: int):
    """Per step, the candidate values [N, V] of the factors it sets. Shape is chosen jointly
    with size over the whole size range (one shape at another size can look alike)."""
    n = len(current)
    low, high = FACTOR_RANGES["size"]
    sizes = np.linspace(low, high, grid)
    shape = np.repeat(np.arange(len(SHAPES)), grid)
    yield {"shape": np.tile(shape, (n, 1)), "size": np.tile(np.tile(sizes, len(SHAPES)), (n, 1))}
    for name in FACTOR_RANGES:
        low, high = FACTOR_RANGES[name]
        half = (high - low) * 0.25 / 2**sweep
        values = getattr(current, name)[:, None] + np.linspace(-half, half, grid)[None]
        yield {name: values % 1.0 if name == "hue" else np.clip(values, low, high)}


def fit_factors(
    images: np.ndarray, start: ShapeFactors, sweeps: int = 5, grid: int = 21
) -> tuple[ShapeFactors, np.ndarray]:
    """Coordinate descent on the rendering error, from ``start``: each sweep sets (shape,
    size) jointly, then every continuous factor to its best value on a grid around the
    current one (a quarter of its range, halved every sweep), the others fixed. Returns (factors, RMSE of their
    rendering vs the images, per image).

    images: float [N, 3, R, R] in [0, 1]."""
    images = np.asarray(images, dtype=np.float64)
    n, resolution = len(images), images.shape[-1]
    fields = start.as_dict()
    current = ShapeFactors(**{k: np.asarray(v, dtype=np.int64 if k == "shape" else np.float64) for k, v in fields.items()})
    rows = np.arange(n)
    for sweep in range(sweeps):
        for changes in _steps(current, sweep, grid):
            rendered = render(_trials(current, changes), resolution).reshape(n, -1, 3 * resolution * resolution)
            best = ((rendered - images.reshape(n, 1, -1)) ** 2).mean(-1).argmin(1)
            current = ShapeFactors(**{**current.as_dict(), **{k: v[rows, best] for k, v in changes.items()}})
    residual = np.sqrt(((render(current, resolution) - images) ** 2).reshape(n, -1).mean(-1))
    return current, residual

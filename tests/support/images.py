"""PNG files in tests: a saved image read back, and a solid-colour one written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def read_png(path: Path) -> np.ndarray:
    """The image as float64 RGB in [0, 1] (height x width x 3), as numpy recomputes a metric."""
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0


def solid_png(path: Path, color, size=(40, 24)) -> str:
    """An RGB PNG of one colour at ``path``; its path as a string."""
    Image.new("RGB", size, color).save(path)
    return str(path)

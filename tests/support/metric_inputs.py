"""Inputs the metric tests share: pairs of 8-bit images, and stand-ins for the download
functions a metric could reach, which fail like an offline machine."""

from __future__ import annotations

from urllib.error import URLError

import numpy as np
import torch


def image_pairs(seed: int, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of uint8 RGB images (N, H, W, 3): a smooth random image and a perturbed copy."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 1, (n, size // 8, size // 8, 3)).repeat(8, axis=1).repeat(8, axis=2)
    edited = np.clip(base + rng.normal(0, 0.08, base.shape), 0, 1)
    return (base * 255).round().astype(np.uint8), (edited * 255).round().astype(np.uint8)


def as_batch(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> the harness's [0, 1] float NCHW."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


class Downloads:
    """Stands in for a library's download function: records the call, fails like no network."""

    def __init__(self, error: Exception) -> None:
        self.error, self.calls = error, []

    def __call__(self, *args, **kwargs):
        self.calls.append(args)
        raise self.error


def unreachable() -> Downloads:
    return Downloads(URLError("[Errno -3] Temporary failure in name resolution"))

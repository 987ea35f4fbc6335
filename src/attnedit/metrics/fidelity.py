"""Pixel fidelity metrics: SSIM, PSNR, MSE, one value per image, data range fixed at 1.

torchmetrics pools PSNR over the whole batch when ``dim=None`` and infers SSIM's data
range per batch when ``data_range=None``; both are avoided here (see models.md).
"""

from __future__ import annotations

from torch import Tensor
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from attnedit.metrics.base import PairMetric
from attnedit.metrics.registry import register_metric


@register_metric("ssim")
class SSIM(PairMetric):
    name = "ssim"
    higher_is_better = True

    def __init__(self, name: str = "ssim") -> None:
        super().__init__()
        self.name = name

    def score(self, edited: Tensor, reference: Tensor) -> dict[str, Tensor]:
        values = structural_similarity_index_measure(
            edited.float(), reference.float(), data_range=1.0, reduction="none"
        )
        return {self.name: values}


@register_metric("psnr")
class PSNR(PairMetric):
    name = "psnr"
    higher_is_better = True

    def __init__(self, name: str = "psnr") -> None:
        super().__init__()
        self.name = name

    def score(self, edited: Tensor, reference: Tensor) -> dict[str, Tensor]:
        values = peak_signal_noise_ratio(
            edited.float(), reference.float(), data_range=1.0, reduction="none", dim=(1, 2, 3)
        )
        return {self.name: values}


@register_metric("mse")
class MSE(PairMetric):
    name = "mse"
    higher_is_better = False

    def __init__(self, name: str = "mse") -> None:
        super().__init__()
        self.name = name

    def score(self, edited: Tensor, reference: Tensor) -> dict[str, Tensor]:
        diff = edited.double() - reference.double()
        return {self.name: diff.pow(2).flatten(1).mean(dim=1)}

"""Pixel fidelity metrics: SSIM, PSNR, MSE, one value per image, data range fixed at 1.

torchmetrics pools PSNR over the whole batch when ``dim=None`` and infers SSIM's data
range per batch when ``data_range=None``; both are avoided here (see models.md).

SSIM follows Wang et al. 2004 (11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03): the
mean of the SSIM map over the positions where the window lies inside the image, as the
authors' MATLAB ssim_index ('valid' filtering), skimage's structural_similarity
(gaussian_weights=True, use_sample_covariance=False) and torchmetrics before 1.4.2 compute
it. torchmetrics 1.4.2+ (Lightning-AI/torchmetrics PR 2721) averages the whole map of the
reflection-padded image instead, which counts a 5-pixel border of mirrored windows:
``border="pad"`` keeps that reading, a named deviation recorded per row in
``<name>_border`` and in table titles.

``crop`` stays the default of the SAD study (``conf/metrics/sad.yaml``): the SAD paper
names SSIM without its code (no public code, reference/methods.md), so nothing published
says otherwise, and ``crop`` is the definition of the metric's authors. The two borders are
the PIE-Bench SSIM conventions under other names (``crop`` = ``torchmetrics_legacy_crop``,
``pad`` = ``current``; :data:`attnedit.metrics.piebench.SSIM_BORDER`): attnedit-evaluate's
``ssim_convention`` sets this metric's ``border`` when it scores the plain ``ssim``.
"""

from __future__ import annotations

from torch import Tensor

from attnedit.errors import ConfigError, DataError
from attnedit.metrics.base import PairMetric

SSIM_BORDERS = ("crop", "pad")
SSIM_SIGMA = 1.5


class SSIM(PairMetric):
    """Per-image SSIM; ``border``: "crop" (Wang et al., the reference) or "pad" (torchmetrics 1.4.2+)."""

    name = "ssim"
    higher_is_better = True
    display_name, unit, scale = "SSIM", "x10^2", 1e2

    def __init__(self, name: str = "ssim", border: str = "crop") -> None:
        super().__init__()
        if border not in SSIM_BORDERS:
            raise ConfigError(f"metric '{name}': border={border!r} is not one of {SSIM_BORDERS} "
                              "(crop: Wang et al. / skimage, the reference; pad: torchmetrics 1.4.2+).")
        self.name, self.border = name, border

    def score(self, edited: Tensor, reference: Tensor) -> dict[str, Tensor]:
        pad = int(3.5 * SSIM_SIGMA + 0.5)  # half the 11-tap window torchmetrics builds for sigma 1.5
        if min(edited.shape[-2:]) <= 2 * pad:
            raise DataError(f"metric '{self.name}': images of {tuple(edited.shape[-2:])} px are too small for an "
                            f"11x11 SSIM window; give images of at least {2 * pad + 1} px per side.")
        # Imported here: torchmetrics' package import (all of its metrics, torchvision, scipy)
        # takes ~3 s, which a run that stops before scoring (a config or weights error) spares.
        from torchmetrics.functional.image import structural_similarity_index_measure

        values, full = structural_similarity_index_measure(
            edited.float(), reference.float(), sigma=SSIM_SIGMA, data_range=1.0, reduction="none",
            return_full_image=True,
        )
        if self.border == "crop":  # the windows that lie inside the image
            values = full[..., pad:-pad, pad:-pad].flatten(1).mean(dim=1)
        return {self.name: values, f"{self.name}_border": [self.border] * len(values)}


class PSNR(PairMetric):
    name = "psnr"
    higher_is_better = True
    display_name, unit = "PSNR", "dB"

    def __init__(self, name: str = "psnr") -> None:
        super().__init__()
        self.name = name

    def score(self, edited: Tensor, reference: Tensor) -> dict[str, Tensor]:
        from torchmetrics.functional.image import peak_signal_noise_ratio  # imported late: see SSIM.score

        values = peak_signal_noise_ratio(
            edited.float(), reference.float(), data_range=1.0, reduction="none", dim=(1, 2, 3)
        )
        return {self.name: values}


class MSE(PairMetric):
    name = "mse"
    higher_is_better = False
    display_name, unit, scale = "MSE", "x10^4", 1e4

    def __init__(self, name: str = "mse") -> None:
        super().__init__()
        self.name = name

    def score(self, edited: Tensor, reference: Tensor) -> dict[str, Tensor]:
        diff = edited.double() - reference.double()
        return {self.name: diff.pow(2).flatten(1).mean(dim=1)}

"""A run's numerical floor: how far an edit that changes nothing lands from the unedited
image when it goes through the edit path (hooks installed, alpha = 0), on this device.

Fidelity numbers (PSNR, SSIM of an edit vs its unedited sample) mean little once they
approach this floor: on an H200 with TF32 convolutions an alpha = 0 edit of the shapes DDPM
sits at 66.6 dB, and the CelebA-HQ architecture with random weights at 21.6 dB
(reference/gpu-measurements.md). The runner measures it once per run on the first
``numerical_floor.samples`` samples, in one batch of the run's ``batch_size`` (the
samples' identity edits repeated), so the edit batch differs from the reference batch
as in the run itself. Stored in the manifest; every table title of the run shows it.
"""

from __future__ import annotations

import math

import torch

from attnedit.metrics.fidelity import PSNR, SSIM


def measure_floor(backend, method, samples, batch_size: int, references: torch.Tensor | None = None) -> dict | None:
    """PSNR/SSIM of ``method.identity_edit()`` run through ``method.control`` vs the
    unedited images; None where the method has no identity edit."""
    edit = method.identity_edit()
    if edit is None or not samples:
        return None
    refs = backend.reference(samples) if references is None else references
    order = [i % len(samples) for i in range(max(len(samples), int(batch_size)))]
    try:
        with method.control(backend, [edit] * len(order)) as control:
            images = backend.generate([samples[i] for i in order], control)
    finally:
        method.forget_samples()  # the cases pay for their own per-sample discovery
    expected = refs[order]
    psnr = PSNR()(images, expected)["psnr"].double()
    ssim = SSIM()(images, expected)["ssim"].double()
    diff = float((images.double() - expected.double()).abs().max())
    return {
        "what": "alpha = 0 edit through the edit path (hooks installed) vs the unedited image",
        "edit": {k: v for k, v in edit.items() if k not in ("label", "source_text", "target_text")},
        "sample_ids": [s.id for s in samples],
        "batch_size": len(order),
        "identical": diff == 0.0,
        "max_abs_diff": diff,
        "psnr_min": _finite(psnr.min()),  # None: identical images (infinite PSNR)
        "psnr_mean": _finite(psnr[torch.isfinite(psnr)].mean()) if torch.isfinite(psnr).any() else None,
        "ssim_min": float(ssim.min()),
    }


def _finite(value: torch.Tensor) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None

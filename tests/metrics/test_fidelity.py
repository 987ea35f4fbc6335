"""SSIM and PSNR (metrics/fidelity.py) against independent computations: skimage's SSIM
with the settings of Wang et al. 2004, numpy float64 PSNR per image."""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

from attnedit.metrics.fidelity import PSNR, SSIM
from metric_inputs import as_batch, image_pairs


def test_ssim_equals_skimage_gaussian_ssim_of_wang_et_al():
    reference, edited = image_pairs(0, 3, 64)
    # Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, population
    # covariances; skimage's documented settings for that paper.
    expected = [structural_similarity(e, r, data_range=255, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False) for e, r in zip(edited, reference)]
    out = SSIM()(as_batch(edited), as_batch(reference))
    np.testing.assert_allclose(out["ssim"].double().numpy(), expected, atol=2e-5)
    assert out["ssim_border"] == ["crop"] * 3
    assert max(expected) < 0.99  # the pairs really differ
    # torchmetrics 1.5+ averages the map of the reflection-padded image: a named deviation
    padded = SSIM(border="pad")(as_batch(edited), as_batch(reference))["ssim"].double().numpy()
    assert (np.abs(padded - expected) > 0.01).all()


def test_psnr_equals_numpy_float64_per_image():
    reference, edited = image_pairs(1, 3, 32)
    edited[2] = reference[2] // 2  # a much larger error: per-image values must not be pooled
    mse = ((edited.astype(np.float64) - reference) / 255) ** 2
    expected = 10 * np.log10(1.0 / mse.reshape(3, -1).mean(axis=1))
    got = PSNR()(as_batch(edited), as_batch(reference))["psnr"].double().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-3)
    assert expected[2] < expected[0] - 5

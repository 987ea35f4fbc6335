"""SSIM and PSNR (metrics/fidelity.py) against independent computations: skimage's SSIM
with the settings of Wang et al. 2004, numpy float64 PSNR per image."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from skimage.metrics import structural_similarity
from torchmetrics.functional.image import structural_similarity_index_measure

from attnedit.metrics.fidelity import PSNR, SSIM
from attnedit.metrics.piebench import SSIM_BORDER
from attnedit.metrics.registry import build_metric
from metric_inputs import as_batch, image_pairs


def valid_window_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two HxWxC uint8 images in numpy float64: an 11x11 Gaussian window (sigma 1.5)
    at every position where it lies inside the image (the legacy 5-pixel crop), data range 1."""
    x, y = a.astype(np.float64) / 255, b.astype(np.float64) / 255
    g = np.exp(-0.5 * (np.arange(-5, 6) / 1.5) ** 2)
    w = np.outer(g, g) / np.outer(g, g).sum()

    def blur(img):  # mean under the window of every valid position, per channel
        return np.einsum("hwcij,ij->hwc", sliding_window_view(img, (11, 11), axis=(0, 1)), w)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return float((((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean())


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


@pytest.mark.parametrize("convention", sorted(SSIM_BORDER))
def test_ssim_border_of_each_convention_equals_its_reference(convention):
    """The plain ``ssim`` as attnedit-evaluate builds it for ``ssim_convention``: "current"
    equals torchmetrics' own function, the legacy crop a float64 SSIM over the valid windows."""
    reference, edited = image_pairs(2, 3, 48)
    metric = build_metric("ssim", border=SSIM_BORDER[convention])
    got = metric(as_batch(edited), as_batch(reference))
    if convention == "current":
        expected = structural_similarity_index_measure(as_batch(edited), as_batch(reference), data_range=1.0,
                                                       reduction="none").double().numpy()
    else:
        expected = [valid_window_ssim(e, r) for e, r in zip(edited, reference)]
    np.testing.assert_allclose(got["ssim"].double().numpy(), expected, atol=2e-6)
    assert got["ssim_border"] == [SSIM_BORDER[convention]] * 3  # every row records it
    crop, pad = (SSIM(border=b)(as_batch(edited), as_batch(reference))["ssim"] for b in ("crop", "pad"))
    assert (crop - pad).abs().min() > 1e-3  # the conventions differ on these images


def test_psnr_equals_numpy_float64_per_image():
    reference, edited = image_pairs(1, 3, 32)
    edited[2] = reference[2] // 2  # a much larger error: per-image values must not be pooled
    mse = ((edited.astype(np.float64) - reference) / 255) ** 2
    expected = 10 * np.log10(1.0 / mse.reshape(3, -1).mean(axis=1))
    got = PSNR()(as_batch(edited), as_batch(reference))["psnr"].double().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-3)
    assert expected[2] < expected[0] - 5

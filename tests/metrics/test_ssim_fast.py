"""The fast SSIM of the PIE-Bench metrics (metrics/ssim_fast.py) against torchmetrics, in
both border conventions."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure
from torchmetrics.functional.image.ssim import _ssim_update

from attnedit.metrics.ssim_fast import ssim, ssim_against, ssim_reference
from piebench_fixture import one_thread  # noqa: F401 (an autouse fixture: one torch thread)


def test_fast_ssim_equals_torchmetrics():
    gen = torch.Generator().manual_seed(0)
    for shape in [(3, 3, 64, 64), (2, 3, 37, 53), (1, 1, 16, 70)]:
        a = torch.rand(shape, generator=gen)
        b = (a + 0.2 * torch.randn(shape, generator=gen)).clamp(0, 1)
        b[..., : shape[2] // 2, :] *= 0  # zeroed areas, as masked images have
        a[..., : shape[2] // 2, :] *= 0
        expected = torch.stack(
            [structural_similarity_index_measure(a[i : i + 1], b[i : i + 1], data_range=1.0) for i in range(len(a))]
        )
        torch.testing.assert_close(ssim(a, b, chunk=2), expected, atol=1e-5, rtol=0)
    same = torch.rand(1, 3, 20, 20, generator=gen)
    assert abs(float(ssim(same, same)) - 1) < 1e-6


def test_fast_ssim_legacy_crop_equals_torchmetrics_map_cropped():
    """crop=5 against the installed torchmetrics' own per-pixel SSIM map with the 5-pixel
    border cut off as torchmetrics < 1.4.2 did; in strips whose edges fall inside the crop."""
    gen = torch.Generator().manual_seed(5)
    for shape, rows in [((2, 3, 64, 64), 256), ((2, 3, 37, 53), 4), ((1, 1, 16, 70), 3)]:
        a = torch.rand(shape, generator=gen)
        b = (a + 0.2 * torch.randn(shape, generator=gen)).clamp(0, 1)
        a[..., : shape[2] // 2, :] *= 0  # zeroed areas, as masked images have
        b[..., : shape[2] // 2, :] *= 0
        _, full = _ssim_update(a, b, data_range=1.0, return_full_image=True)
        expected = full[..., 5:-5, 5:-5].flatten(1).mean(-1)
        got = ssim_against(a, ssim_reference(b), rows=rows, crop=5)
        torch.testing.assert_close(got.float(), expected, atol=1e-5, rtol=0)
        assert (got - ssim(a, b)).abs().max() > 1e-4  # the border matters: the conventions differ
    with pytest.raises(ValueError, match="5-pixel border crop leaves nothing of a 10x40 image"):
        ssim(torch.rand(1, 1, 10, 40), torch.rand(1, 1, 10, 40), crop=5)

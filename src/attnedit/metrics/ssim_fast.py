"""SSIM with a separable Gaussian window, equal to torchmetrics'
``structural_similarity_index_measure`` (Gaussian window, reflect padding, mean over the
whole padded-then-convolved map) to about 1e-6.

Two conventions of that mean (``crop``): torchmetrics >= 1.4.2 averages the whole map
(``crop=0``); before, it first dropped a border of (kernel size - 1) / 2 = 5 pixels of
the map (``crop=5``, Lightning-AI/torchmetrics src/torchmetrics/functional/image/ssim.py
lines 168-170 at efdb111d9^: ``ssim_idx_full_image[..., pad_h:-pad_h, pad_w:-pad_w]``),
which PR 2721 (commit efdb111d9, 2024-09-09; released in 1.4.2 and 1.5.0) removed.

torchmetrics convolves five maps with a full 11x11 window (121 taps per pixel); its
window is the outer product of two 1-D Gaussians, so a 1x11 pass followed by an 11x1
pass gives the same result with 22 taps. The five maps of an image are stacked as the
channels of one channels-last tensor: oneDNN's depthwise convolution is about ten times
faster in that layout than on NCHW planes on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_window(sigma: float, dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """torchmetrics' 1-D window: size int(3.5 * sigma + 0.5) * 2 + 1, normalized to sum 1."""
    size = int(3.5 * sigma + 0.5) * 2 + 1
    dist = torch.arange((1 - size) / 2, (1 + size) / 2, 1, dtype=dtype, device=device)
    gauss = torch.exp(-torch.pow(dist / sigma, 2) / 2)
    return gauss / gauss.sum()


#: Blurred maps per image: p, t, p*p, t*t, p*t (3 channels each) and one zero channel.
#: oneDNN's channels-last depthwise convolution is fastest at 16 channels (15 or 9 are
#: ~1.4x slower per call, 32 ~13x: it switches to another kernel), so every call blurs 16.
MAP_CHANNELS = 16


def _blur(x: Tensor, window: Tensor) -> Tensor:
    """Valid separable Gaussian blur of every channel of a padded channels-last NCHW tensor."""
    c, k = x.shape[1], window.numel()
    x = F.conv2d(x, window.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, window.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


@dataclass(frozen=True)
class SSIMReference:
    """What SSIM needs of the target images, made once for any number of predictions."""

    target: Tensor  # reflect-padded, NHWC view
    target_sq: Tensor  # its square, NHWC
    window: Tensor
    data_range: float


def ssim_reference(target: Tensor, data_range: float = 1.0, sigma: float = 1.5) -> SSIMReference:
    if target.ndim != 4:
        raise ValueError(f"ssim: expected NCHW target images, got shape {tuple(target.shape)}")
    window = gaussian_window(sigma, target.dtype, target.device)
    pad = (window.numel() - 1) // 2
    # Pad the images, not the maps: the padded product is the product of the padded images.
    padded = F.pad(target, (pad, pad, pad, pad), mode="reflect").permute(0, 2, 3, 1)
    return SSIMReference(padded, padded * padded, window, data_range)


def ssim_against(
    preds: Tensor, ref: SSIMReference, k1: float = 0.01, k2: float = 0.03, rows: int = 256, crop: int = 0
) -> Tensor:
    """Per-image SSIM of ``preds`` against the prepared target images, shape [N] (float64);
    the mean leaves out a border of ``crop`` pixels of the SSIM map (see the module docstring).

    Computed in strips of ``rows`` output rows with one map buffer reused across strips:
    a 512x512 image's full maps take ~17 MB per buffer, and fresh buffers cost page faults.
    Measured on 2 cores: strips of 256 rows ~10% faster than whole images, of 64 rows or
    fewer slower (per-call overheads)."""
    pad = (ref.window.numel() - 1) // 2
    n, padded_h, padded_w, c = ref.target.shape
    if preds.ndim != 4 or tuple(preds.shape) != (n, c, padded_h - 2 * pad, padded_w - 2 * pad):
        raise ValueError(
            f"ssim: predictions {tuple(preds.shape)} do not match the target (padded {tuple(ref.target.shape)})"
        )
    p_all = F.pad(preds.to(ref.target.dtype), (pad, pad, pad, pad), mode="reflect").permute(0, 2, 3, 1)
    height, width = preds.shape[-2:]
    if min(height, width) <= 2 * crop:
        raise ValueError(f"ssim: a {crop}-pixel border crop leaves nothing of a {height}x{width} image")
    c1, c2 = (k1 * ref.data_range) ** 2, (k2 * ref.data_range) ** 2
    # The five maps are written straight into one NHWC buffer (faster than concatenating
    # channels-last tensors); its 16th channel stays zero.
    buffer = p_all.new_zeros(n, min(rows, height) + 2 * pad, padded_w, MAP_CHANNELS)
    total = torch.zeros(n, dtype=torch.float64, device=preds.device)
    for top in range(0, height, rows):
        strip = slice(top, min(top + rows, height) + 2 * pad)
        p, t = p_all[:, strip], ref.target[:, strip]
        maps = buffer[:, : p.shape[1]]
        maps[..., :c] = p
        maps[..., c : 2 * c] = t
        torch.mul(p, p, out=maps[..., 2 * c : 3 * c])
        maps[..., 3 * c : 4 * c] = ref.target_sq[:, strip]
        torch.mul(p, t, out=maps[..., 4 * c : 5 * c])
        # Back to planar maps: the formula's elementwise passes run several times faster on them.
        blurred = _blur(maps.permute(0, 3, 1, 2), ref.window)[:, : 5 * c].contiguous()
        mu_p, mu_t, e_pp, e_tt, e_pt = blurred.unflatten(1, (5, c)).unbind(1)
        # torchmetrics' formula, written in place to spare memory traffic.
        mu_pt = mu_p * mu_t
        upper = e_pt.sub_(mu_pt).mul_(2).add_(c2)  # 2 * cov + c2
        numerator = mu_pt.mul_(2).add_(c1).mul_(upper)
        mu_p.pow_(2)
        mu_t.pow_(2)
        lower = e_pp.sub_(mu_p).clamp_(min=0.0).add_(e_tt.sub_(mu_t).clamp_(min=0.0)).add_(c2)
        denominator = mu_p.add_(mu_t).add_(c1).mul_(lower)
        ssim_map = numerator.div_(denominator)
        if crop:  # the rows of this strip inside the crop, and the columns
            first = max(crop - top, 0)
            last = max(first, min(height - crop - top, ssim_map.shape[2]))  # never a negative index
            ssim_map = ssim_map[:, :, first:last, crop : width - crop]
        total += ssim_map.sum((1, 2, 3), dtype=torch.float64)
    return total / (c * (height - 2 * crop) * (width - 2 * crop))


def ssim(
    preds: Tensor,
    target: Tensor,
    data_range: float = 1.0,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    chunk: int = 1,
    crop: int = 0,
) -> Tensor:
    """Per-image SSIM of two NCHW batches, shape [N], computed ``chunk`` images at a time
    (one by default: the maps of a 512x512 image already fill a CPU cache).

    Matches ``torchmetrics.functional.structural_similarity_index_measure(preds, target,
    data_range=data_range, reduction="none")`` with its default Gaussian window
    (``crop=0``; ``crop=5``: the same before torchmetrics 1.4.2).
    """
    if preds.shape != target.shape or preds.ndim != 4:
        shapes = f"{tuple(preds.shape)} and {tuple(target.shape)}"
        raise ValueError(f"ssim: expected two NCHW tensors of one shape, got {shapes}")
    out = []
    for start in range(0, preds.shape[0], chunk):
        ref = ssim_reference(target[start : start + chunk].to(preds.dtype), data_range, sigma)
        out.append(ssim_against(preds[start : start + chunk], ref, k1, k2, crop=crop))
    return torch.cat(out).to(preds.dtype)  # torchmetrics' dtype

"""Independent float64 references for the Jacobian-based baselines (pullback, pullback_move,
local_basis): the full Jacobian of the mid-block output by torch.func.jacrev, its SVD and
the public power method on it in numpy."""

from __future__ import annotations

import numpy as np
import torch

from attnedit.methods.local_basis import plain_attention


def mid_block_of(unet, timestep):
    """x (B, C, H, W) -> the mid-block output, captured by a plain forward hook (whole UNet runs)."""
    def f(x):
        seen = []
        handle = unet.mid_block.register_forward_hook(lambda m, a, out: seen.append(out))
        try:
            unet(x, torch.tensor(timestep))
        finally:
            handle.remove()
        return seen[0]
    return f


def full_svd(unet, x, timestep):
    """(J, s, Vh) of the full Jacobian of the mid-block output at x, float64 numpy."""
    f = mid_block_of(unet, timestep)
    with plain_attention(unet):
        jacobian = torch.func.jacrev(lambda z: f(z[None])[0].flatten())(x).reshape(-1, x.numel())
    j = jacobian.numpy()
    _, s, vh = np.linalg.svd(j)
    return j, s, vh


def largest_positive(rows):
    """Each row with the sign that makes its largest-magnitude entry positive."""
    rows = np.asarray(rows)
    return rows * np.sign(rows[np.arange(len(rows)), np.abs(rows).argmax(1)])[:, None]


def numpy_power_method(j, rank, iterations, seed=0):
    """The public Algorithm 1 (utils.py:194-242) on an explicit Jacobian, numpy float64:
    V = QR of a seeded (D, rank) Gaussian, then V <- Vh of the SVD of V J^T J."""
    start = torch.randn(j.shape[1], rank, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).numpy()
    v = np.linalg.qr(start)[0].T
    for _ in range(iterations):
        v = np.linalg.svd(v @ j.T @ j, full_matrices=False)[2]
    return v

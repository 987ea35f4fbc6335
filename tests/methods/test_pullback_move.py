"""The pullback-move baseline (methods/pullback_move.py): one step along the Rayleigh-Ritz
vectors of the full Jacobian of the mid-block output, computed here in numpy float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnedit.methods.pullback_move import PullbackMove
from jacobian_reference import full_svd, largest_positive, mid_block_of


def numpy_subspace_iteration(j, k, iterations, seed=0):
    """subspace_iteration on an explicit Jacobian (numpy float64): QR-orthonormalized
    J^T J V, then Rayleigh-Ritz (SVD of J V^T); signs: largest entry positive."""
    v = torch.randn(k, j.shape[1], generator=torch.Generator().manual_seed(seed), dtype=torch.float64).numpy()
    v = np.linalg.qr(v.T)[0].T
    for _ in range(iterations):
        v = np.linalg.qr((v @ j.T @ j).T)[0].T
    _, s, qt = np.linalg.svd(j @ v.T, full_matrices=False)
    return largest_positive(qt @ v), s


def test_pullback_move_is_one_step_along_the_rayleigh_ritz_vectors_of_the_jacobian(small_backend):
    method = PullbackMove(directions=[0, 1], alphas=[0.5], t_edit=0.5, max_iters=2, tol=1e-12)
    method.setup(small_backend)
    edits = [{**method.edits()[0], "alpha": 0.5}, {**method.edits()[1], "alpha": -0.3}]
    x_t = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    with method.control(small_backend, edits) as control:
        out = control.latent_hook(500, x_t)
    for i, (edit, k) in enumerate(zip(edits, (0, 1))):
        j, _, _ = full_svd(small_backend.unet, x_t[i], 500)
        vectors, s = numpy_subspace_iteration(j, 2, iterations=2)
        h_norm = float(mid_block_of(small_backend.unet, 500)(x_t[i : i + 1]).norm())
        step = edit["alpha"] * h_norm / s[k] * vectors[k]
        torch.testing.assert_close(out[i], x_t[i] + torch.from_numpy(step).view(3, 8, 8), atol=1e-7, rtol=0)
        assert control.row_extras[i]["x_step_ratio"] == pytest.approx(np.linalg.norm(step) / float(x_t[i].norm()))

"""The local basis of the Jacobian-based baselines (methods/local_basis.py) against
independent computations: the SVD of the full Jacobian (torch.func.jacrev, numpy float64),
the public power method written here in numpy, and the sign alignment against a planted flip."""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from attnedit.methods.local_basis import (
    LocalBasis,
    align_signs,
    canonical_reference,
    h_space,
    plain_attention,
    power_method,
    subspace_iteration,
)
from ddpm_models import small_unet
from harness import REPO
from jacobian_reference import full_svd, largest_positive, numpy_power_method

sys.path.insert(0, str(REPO / "benchmarks"))
from bench_baselines import official_local_basis  # noqa: E402


def test_local_basis_matches_svd_of_the_full_jacobian():
    unet = small_unet()
    x = torch.randn(3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with plain_attention(unet):
        f = h_space(unet, 600)
        jacobian = torch.func.jacrev(lambda z: f(z[None])[0].flatten())(x).reshape(-1, x.numel())
        found = subspace_iteration(f, x, k=3, max_iters=60, tol=1e-4, seed=0)
        h = f(x[None])
    _, s, vh = torch.linalg.svd(jacobian)
    assert found.converged and found.iterations < 60
    torch.testing.assert_close(found.singular_values, s[:3], rtol=1e-7, atol=0)
    got = found.vectors.flatten(1)
    np.testing.assert_allclose((got @ vh[:3].T).diagonal().abs().numpy(), 1.0, atol=1e-7)  # up to sign
    torch.testing.assert_close(got @ got.T, torch.eye(3, dtype=torch.float64), atol=1e-12, rtol=0)
    assert (got.gather(1, got.abs().argmax(1, keepdim=True)) > 0).all(), "largest entry positive"
    assert found.h_norm == pytest.approx(float(h.norm()), rel=1e-12)


def test_plain_attention_is_restored_and_h_space_skips_the_up_path():
    unet = small_unet()
    before = [type(m.processor) for m in unet.modules() if hasattr(m, "processor")]
    ran = []
    handle = unet.up_blocks[0].register_forward_hook(lambda *a: ran.append(1))
    with plain_attention(unet):
        h = h_space(unet, 500)(torch.randn(2, 3, 8, 8, dtype=torch.float64))
    handle.remove()
    assert h.shape == (2, 16, 2, 2) and not ran
    assert [type(m.processor) for m in unet.modules() if hasattr(m, "processor")] == before
    assert not any(m._forward_hooks for m in unet.modules())


# -- the official power method and the sign alignment ------------------------------------------
def same_up_to_sign(got, want, atol):
    got, want = np.asarray(got).reshape(len(want), -1), np.asarray(want)
    signs = np.sign(np.sum(got * want, axis=1))
    np.testing.assert_allclose(got, want * signs[:, None], atol=atol)


def test_power_method_is_the_public_algorithm():
    unet = small_unet()
    x = torch.randn(3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    j, _, _ = full_svd(unet, x, 600)
    with plain_attention(unet):  # allclose(atol=1) always holds: the stop comes at i = min_iters + 1 (0-based)
        found = power_method(h_space(unet, 600), x, rank=3, keep=2, min_iters=1, max_iters=50, tol=1.0, seed=0)
        unmet = power_method(h_space(unet, 600), x, rank=3, keep=2, min_iters=0, max_iters=2, tol=1e-12)
    assert found.converged and found.iterations == 3
    assert not unmet.converged and unmet.iterations == 2
    want = numpy_power_method(j, rank=3, iterations=3)[:2]
    # diffusers' attention upcasts its softmax to float32: jvp/vjp and jacrev round apart by ~1e-9
    same_up_to_sign(found.vectors, want, atol=1e-7)
    got = found.vectors.flatten(1).numpy()
    np.testing.assert_allclose(found.singular_values.numpy(), np.linalg.norm(j @ got.T, axis=0), rtol=1e-7)
    np.testing.assert_allclose(found.h_directions.flatten(1).numpy(), (j @ got.T / np.linalg.norm(j @ got.T, axis=0)).T,
                               atol=1e-7)


def basis_from(j, s, vh, k):
    """A LocalBasis from an exact SVD: v_k = Vh rows, J v_k / s_k."""
    vectors = torch.from_numpy(vh[:k].copy()).view(k, 3, 8, 8)
    return LocalBasis(vectors, torch.from_numpy(s[:k].copy()), 0, 0.0, True, 1.0,
                      torch.from_numpy((j @ vh[:k].T / s[:k]).T.copy()))


def test_sign_alignment_undoes_a_planted_flip():
    """Two samples near each other: the sample's basis, with its vector 1 flipped on purpose,
    ends with the signs whose h-space directions agree with the reference sample's."""
    unet = small_unet()
    gen = torch.Generator().manual_seed(3)
    x_ref = torch.randn(3, 8, 8, dtype=torch.float64, generator=gen)
    x = x_ref + 0.05 * torch.randn(3, 8, 8, dtype=torch.float64, generator=gen)
    j_ref, s_ref, vh_ref = full_svd(unet, x_ref, 600)
    j, s, vh = full_svd(unet, x, 600)
    u_ref = j_ref @ largest_positive(vh_ref[:3]).T  # the reference's own signs: largest entry positive
    want = vh[:3] * np.sign(np.sum((j @ vh[:3].T) * u_ref, axis=0))[:, None]
    reference = canonical_reference(basis_from(j_ref, s_ref, vh_ref, 3))
    found = basis_from(j, s, vh, 3)
    planted = torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64).view(-1, 1, 1, 1)
    flipped_basis = replace(found, vectors=found.vectors * planted, h_directions=found.h_directions * planted.view(-1, 1))
    _, unplanted_flips, _ = align_signs(found, reference.h_directions)
    aligned, flipped, agreement = align_signs(flipped_basis, reference.h_directions)
    assert flipped.tolist() == [bool(unplanted_flips[0]), not unplanted_flips[1], bool(unplanted_flips[2])]
    np.testing.assert_allclose(aligned.vectors.flatten(1).numpy(), want, atol=1e-12)
    np.testing.assert_allclose(aligned.h_directions.flatten(1).numpy(),
                               (j @ want.T / np.linalg.norm(j @ want.T, axis=0)).T, atol=1e-12)
    cos = np.sum(j @ want.T * u_ref, axis=0) / np.linalg.norm(j @ want.T, axis=0) / np.linalg.norm(u_ref, axis=0)
    np.testing.assert_allclose(agreement.numpy(), cos, atol=1e-12)
    assert (cos > 0.5).all(), "nearby samples: each direction is the reference's"


def test_the_benchmarks_official_loop_is_the_public_algorithm():
    """benchmarks/bench_baselines.py times power_method against its own loop of the public
    code (jacfwd chunks, the Jacobian of the summed projections, an SVD): that loop, with a
    chunk smaller than the rank, is numpy's power method on the explicit Jacobian, and so is
    power_method from the same start."""
    unet = small_unet()
    x = torch.randn(3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    j, _, _ = full_svd(unet, x, 600)
    start = torch.randn(x.numel(), 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v0 = torch.linalg.qr(start)[0].T.reshape(3, *x.shape)  # power_method's start for seed 0
    with plain_attention(unet):
        f = h_space(unet, 600)
        vt, s, iterations = official_local_basis(f, x[None], v0, iters=3, chunk_size=2, min_iters=3, tol=1e-30)
        ours = power_method(f, x, rank=3, min_iters=3, max_iters=3, tol=1e-30, seed=0)
    want = numpy_power_method(j, rank=3, iterations=3)
    previous = numpy_power_method(j, rank=3, iterations=2)
    assert iterations == 3 and ours.iterations == 3
    same_up_to_sign(vt.numpy(), want, atol=1e-7)
    same_up_to_sign(ours.vectors, want, atol=1e-7)
    np.testing.assert_allclose(s.numpy(), np.sqrt(np.linalg.svd(previous @ j.T @ j, compute_uv=False)), rtol=1e-7)

"""The SAD baselines against independent computations: pullback's bases against the SVD
of the full Jacobian (torch.func.jacrev, numpy float64), its edit against the public
x-space guidance formula computed here, its sign alignment against a planted flip; h-space
PCA and attention-input PCA against numpy PCA of features captured by plain hooks; seeded
random directions; pullback's honest timing; every method through the runner into one
comparison and editing-time table."""

from __future__ import annotations

import json
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from omegaconf import OmegaConf

from attnedit.backends.base import Control
from attnedit.backends.ddpm import DDPMBackend
from attnedit.backends.tiny import SCHEDULER, TINY_UNET, build_tiny_ddpm
from attnedit.config import compose
from attnedit.cli.tables import main as tables
from attnedit.report.comparison import build_comparison, comparison_table
from attnedit.data.base import Sample
from attnedit.errors import ConfigError
from attnedit.methods.attn_input_pca import AttnInputPCA
from attnedit.methods.auto_labels import auto_label
from attnedit.methods.hspace_pca import HSpacePCA
from attnedit.methods.local_basis import (
    LocalBasis,
    align_signs,
    canonical_reference,
    h_space,
    plain_attention,
    power_method,
    subspace_iteration,
)
from attnedit.methods.pullback import Pullback
from attnedit.methods.pullback_move import PullbackMove
from attnedit.methods.random_directions import RandomDirections
from attnedit.run.runner import Runner
from attnedit.store.run_store import RunStore
from attnedit.report.timing import MIXED_MACHINES_MARK, timing_table
from conftest import REPO, run_overrides

CORE = ("case_id", "sample_id", "method", "direction", "label", "alpha", "alpha_scale", "layers", "position",
        "source_text", "target_text", "ssim", "psnr", "seconds_per_case", "batch_size", "model_random_weights")


# -- pullback: the local basis ------------------------------------------------------------
def small_unet() -> UNet2DModel:
    """8x8 input, mid block at 2x2x16: J is 64 x 192, cheap for jacrev; float64."""
    torch.manual_seed(0)
    config = dict(TINY_UNET, sample_size=8, block_out_channels=(8, 16, 16), norm_num_groups=4,
                  down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
    return UNet2DModel(**config).double().eval().requires_grad_(False)


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


# -- the official pullback edit ----------------------------------------------------------------
@pytest.fixture(scope="module")
def small_backend(tmp_path_factory):
    """A DDPMBackend on small_unet() in float64: 4 steps (750, 500, 250, 0)."""
    folder = tmp_path_factory.mktemp("small_ddpm")
    small_unet().float().save_pretrained(folder)
    DDPMScheduler(**SCHEDULER).save_pretrained(folder)
    backend = DDPMBackend(str(folder), device="cpu", num_inference_steps=4)
    backend.unet, backend.dtype = backend.unet.double(), torch.float64
    return backend


def state_before(backend, seed, timestep):
    """x_t of an unedited sample where the step of ``timestep`` starts: diffusers' DDIM loop."""
    scheduler = DDIMScheduler.from_config(backend.scheduler.config)
    scheduler.set_timesteps(backend.num_inference_steps)
    x = torch.randn(backend.image_shape, generator=torch.Generator().manual_seed(seed)).double()[None]
    for t in scheduler.timesteps:
        if int(t) == timestep:
            return x[0]
        x = scheduler.step(backend.unet(x, t).sample, t, x, eta=0.0).prev_sample
    raise AssertionError(timestep)


def official(backend, **kw) -> Pullback:
    """Few iterations (the CPU is slow at forward-mode products): tol 1e-12 is never met."""
    method = Pullback(**{"directions": [0, 1], "alphas": [1.0, -0.5], "t_edit": 0.5, "rank": 3, "min_iters": 0,
                         "max_iters": 2, "tol": 1e-12, "guidance_steps": 3, "sign_reference_seed": 7, **kw})
    method.setup(backend)
    return method


def test_pullback_edit_is_the_public_x_space_guidance_along_aligned_singular_vectors(small_backend):
    method = official(small_backend)
    assert (method.timestep, method.boost_timestep) == (500, 250)
    edits = [method.edits()[0], method.edits()[3]]  # (direction 0, alpha 1), (direction 1, alpha -0.5)
    x_t = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    with method.control(small_backend, edits) as control:
        assert torch.equal(control.latent_hook(750, x_t), x_t)  # not t_edit: untouched
        out = control.latent_hook(500, x_t)
    unet = small_backend.unet
    j_ref, _, _ = full_svd(unet, state_before(small_backend, 7, 500), 500)
    u_ref = j_ref @ largest_positive(numpy_power_method(j_ref, rank=3, iterations=2)[:2]).T
    for i, (edit, k) in enumerate(zip(edits, (0, 1))):
        j, _, _ = full_svd(unet, x_t[i], 500)
        v = numpy_power_method(j, rank=3, iterations=2)[k]
        v = v * np.sign((j @ v) @ u_ref[:, k])  # the sign agreeing with the reference in h-space
        probe = edit["alpha"] * torch.from_numpy(v).view(1, 3, 8, 8)
        x = x_t[i : i + 1].clone()
        with torch.no_grad():
            for _ in range(3):  # edit.py:766-772 with x_space_guidance at 1716-1734
                x = x + 0.1 * (unet(x + probe, 500).sample - unet(x, 500).sample)
        torch.testing.assert_close(out[i], x[0], atol=1e-8, rtol=0)
        extras = control.row_extras[i]
        assert extras["singular_value"] == pytest.approx(np.linalg.norm(j @ v), rel=1e-8)
        assert extras["x_step_ratio"] == pytest.approx(float((x[0] - x_t[i]).norm() / x_t[i].norm()), rel=1e-6)
        assert extras["guidance_unet_evals"] == 6 and extras["pullback_iterations"] == 2
        cos = (j @ v) @ u_ref[:, k] / np.linalg.norm(j @ v) / np.linalg.norm(u_ref[:, k])
        assert extras["sign_agreement"] == pytest.approx(cos, rel=1e-6)


def test_performance_boosting_is_eta_one_from_the_step_nearest_0_2_T(small_backend):
    method = official(small_backend, alphas=[0.0], directions=[0], sign_alignment="none", max_iters=1)
    with method.control(small_backend, method.edits()) as control:
        got = small_backend.generate([Sample(id="s", seed=5)], control)
    assert [control.eta_at(t) for t in (750, 500, 250, 0)] == [0.0, 0.0, 1.0, 1.0]
    scheduler = DDIMScheduler.from_config(small_backend.scheduler.config)
    scheduler.set_timesteps(4)
    # diffusers' DDIMPipeline recipe: one CPU generator per sample draws x_T, then the
    # variance noise of each eta > 0 step in the model's dtype (an eta 0 step draws nothing)
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(small_backend.image_shape, generator=generator).double()[None]
    with torch.no_grad():
        for t in scheduler.timesteps:
            eta = 1.0 if int(t) <= 250 else 0.0
            noise = torch.randn((1, *small_backend.image_shape), generator=generator, dtype=torch.float64) if eta else None
            x = scheduler.step(small_backend.unet(x, t).sample, t, x, eta=eta, variance_noise=noise).prev_sample
    torch.testing.assert_close(got, (x.float() / 2 + 0.5).clamp(0, 1), atol=1e-6, rtol=0)
    assert method.edits()[0]["performance_boosting_t"] == 250
    # the step nearest 0.2 T is the last one: the public code boosts nothing (edit.py:1650)
    assert official(small_backend, performance_boosting_t=0.05, sign_alignment="none", max_iters=1).boost_timestep is None


def test_steps_before_first_edit_timestep_equal_the_unedited_run(small_backend):
    """The promise behind DDPMBackend's stored-state start: x entering every step down to
    first_edit_timestep is the unedited run's, bit for bit."""
    def states(control):
        seen = {}
        inner = getattr(control, "latent_hook", None)

        class Spy(Control):
            eta_at = getattr(control, "eta_at", None)

            def latent_hook(self, t, x):
                seen[t] = x.clone()
                return inner(t, x) if inner else x

        small_backend.generate([Sample(id="s", seed=4)], Spy())
        return seen

    unedited = states(None)
    methods = [official(small_backend, directions=[0], alphas=[1.0], max_iters=1),
               PullbackMove(directions=[0], alphas=[0.4], t_edit=0.5, max_iters=1),
               HSpacePCA(directions=[0], alphas=[1.0], num_samples=3, window=[0.2, 0.6], progress=False)]
    methods[1].setup(small_backend), methods[2].setup(small_backend)
    for method in methods:
        with method.control(small_backend, method.edits()[:1]) as control:
            first = control.first_edit_timestep
            edited = states(control)
        assert first == 500, type(method).__name__
        before = [t for t in edited if t >= first]
        assert all(torch.equal(edited[t], unedited[t]) for t in before), type(method).__name__
        assert not torch.equal(edited[0], unedited[0]), type(method).__name__


def test_pullback_reuses_a_samples_decomposition_across_batches(small_backend):
    method = official(small_backend, alphas=[0.0, 1.0], directions=[1], max_iters=1)
    s = [Sample(id="s", seed=11)] * 2
    with method.control(small_backend, method.edits()) as first:
        edited = small_backend.generate(s, first)
    assert method.is_identity(method.edits()[0]) and not method.is_identity(method.edits()[1])
    seconds = first.row_extras[0]["discovery_seconds_per_sample"]
    assert seconds > 0 and first.row_extras[0]["discovery_share_seconds"] == pytest.approx(seconds / 2)
    with method.control(small_backend, method.edits()[1:]) as again:  # another batch, same sample
        torch.testing.assert_close(small_backend.generate(s[:1], again), edited[1:], atol=1e-6, rtol=0)
    reused, before = again.row_extras[0], first.row_extras[1]
    assert reused["discovery_share_seconds"] == 0.0, "nothing decomposed again"
    for key in ("discovery_seconds_per_sample", "singular_value", "pullback_iterations", "sign_flipped"):
        assert reused[key] == before[key], key


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


@pytest.mark.parametrize("cls, bad, match", [
    (PullbackMove, {"alpha_scale": "huge"}, "alpha_scale"), (Pullback, {"t_edit": 0.0}, "t_edit"),
    (PullbackMove, {"directions": [0, 4], "num_vectors": 3}, "num_vectors"), (Pullback, {"max_iters": 0}, "max_iters"),
    (Pullback, {"directions": [0, 4], "rank": 3}, "rank"), (Pullback, {"sign_alignment": "up"}, "sign_alignment"),
    (Pullback, {"performance_boosting_t": 1.5}, "performance_boosting_t"), (Pullback, {"guidance_steps": 0}, "guidance_steps"),
])
def test_pullback_rejects_bad_settings(cls, bad, match):
    with pytest.raises(ConfigError, match=match):
        cls(**bad)


# -- h-space PCA (Haas et al.) --------------------------------------------------------------------
def numpy_hspace_pca(backend, seeds, eta):
    """Mid-block outputs captured by an own hook in an eta-``eta`` run per step; numpy PCA per
    step in float64, signs as the public code: largest entry positive at the first step, later
    steps agreeing with it."""
    h, now = {}, {}
    unet = backend.unet
    h1 = unet.register_forward_pre_hook(lambda m, a: now.update(t=int(a[1])))
    h2 = unet.mid_block.register_forward_hook(lambda m, i, out: h.setdefault(now["t"], []).append(out.double().flatten(1)))
    try:
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        x_T = torch.stack([torch.randn(backend.image_shape, generator=g) for g in generators])
        backend.denoise(x_T, generators=generators, eta_at=lambda t: eta)
    finally:
        h1.remove(), h2.remove()
    comps, svals = [], []
    for t in backend.timesteps():
        z = torch.cat(h[t]).numpy()
        _, s, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
        comps.append(vt), svals.append(s)
    comps = np.stack(comps)
    comps[0] = largest_positive(comps[0])
    comps *= np.sign(np.sum(comps * comps[:1], axis=2))[:, :, None]
    return comps, np.stack(svals)


def test_hspace_pca_is_per_step_pca_of_the_mid_block_output(small_backend, tmp_path):
    method = HSpacePCA(directions=3, num_samples=6, first_seed=5000, discovery_batch_size=4, progress=False)
    method.setup(small_backend, cache_dir=str(tmp_path))
    comps, svals = numpy_hspace_pca(small_backend, list(range(5000, 5006)), eta=1.0)
    assert method.steps == [750, 500, 250, 0]
    np.testing.assert_allclose(method.singular_values.numpy(), svals[:, :3], rtol=1e-6)  # features kept in float32
    np.testing.assert_allclose(method.components.numpy(), comps[:, :3], atol=1e-6)  # stored float32
    again = HSpacePCA(directions=3, num_samples=6, first_seed=5000, progress=False)
    again.setup(small_backend, cache_dir=str(tmp_path))
    assert again.discovery_cached and torch.equal(again.components, method.components)
    assert again.describe()["discovery_compute_seconds"] == method.discovery_compute_seconds > 0


@pytest.mark.parametrize("alpha_scale", ["singular_value", "std", "h_norm"])
def test_hspace_pca_adds_its_scaled_component_to_h_at_every_step(small_backend, alpha_scale):
    method = HSpacePCA(directions=[0, 2], alphas=[1.0, -0.5], alpha_scale=alpha_scale, num_samples=6,
                       first_seed=5000, progress=False)
    method.setup(small_backend)
    comps, svals = numpy_hspace_pca(small_backend, list(range(5000, 5006)), eta=1.0)
    edits = [method.edits()[0], method.edits()[3]]  # (0, +1), (2, -0.5)
    raw, final, now = [], [], {}
    unet = small_backend.unet
    handles = [unet.register_forward_pre_hook(lambda m, a: now.update(t=int(a[1]))),
               unet.mid_block.register_forward_hook(lambda m, i, out: raw.append((now["t"], out.clone())))]
    try:
        with method.control(small_backend, edits) as control:
            handles.append(unet.mid_block.register_forward_hook(lambda m, i, out: final.append(out.clone())))
            small_backend.generate([Sample(id="a", seed=1), Sample(id="b", seed=2)], control)
    finally:
        for handle in handles:
            handle.remove()
    ratios = np.zeros(2)
    for (t, h), edited in zip(raw, final):
        j = [750, 500, 250, 0].index(t)
        for i, (k, alpha) in enumerate(((0, 1.0), (2, -0.5))):
            std = svals[j, k] / np.sqrt(5)
            size = {"singular_value": np.sqrt(49_999) * std, "std": std, "h_norm": float(h[i].norm())}[alpha_scale]
            want = alpha * 0.1 * size * comps[j, k]
            np.testing.assert_allclose((edited[i] - h[i]).flatten().numpy(), want, atol=1e-6 * max(1, abs(want).max()))
            ratios[i] += np.linalg.norm(want) / float(h[i].norm()) / 4
    assert len(raw) == 4
    np.testing.assert_allclose([e["delta_h_ratio"] for e in control.row_extras], ratios, rtol=1e-6)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in unet.modules()), "hooks removed"


def test_hspace_pca_rejects_bad_settings(small_backend):
    for bad, match in (({"alpha_scale": "big"}, "alpha_scale"), ({"window": [0.9, 0.2]}, "window"),
                       ({"num_samples": 3, "directions": 3}, "num_samples"), ({"singular_value_samples": 1}, "singular")):
        with pytest.raises(ConfigError, match=match):
            HSpacePCA(**bad)
    with pytest.raises(ConfigError, match="max_feature_gb"):
        HSpacePCA(num_samples=4, max_feature_gb=1e-9, progress=False).setup(small_backend)


# -- attention-input PCA (named hspace_pca before) ------------------------------------------------
@pytest.fixture(scope="module")
def short_backend(tiny_ddpm_dir):
    return DDPMBackend(str(tiny_ddpm_dir), device="cpu", num_inference_steps=3)  # timesteps 666, 333, 0


LAYER = "down_blocks.4.attentions.0"  # 4x4 tokens of 64 channels in the tiny model


def numpy_pca(backend, seeds, layer):
    """Collect the GroupNorm outputs of ``layer`` at every step in (0, T) with an own hook,
    then PCA in float64 numpy: SVD of the centered token matrix."""
    tokens, now = [], {}
    unet, attn = backend.unet, backend.self_attention_layers()[layer]
    h1 = unet.register_forward_pre_hook(lambda m, a: now.update(t=int(a[1])))
    h2 = attn.group_norm.register_forward_hook(
        lambda m, i, z: tokens.append(z.double().numpy().reshape(len(z), z.shape[1], -1).transpose(0, 2, 1).reshape(-1, z.shape[1]))
        if 0 < now["t"] < 1000 else None)
    try:
        backend.denoise(backend.initial_noise(seeds))
    finally:
        h1.remove(), h2.remove()
    z = np.concatenate(tokens)
    _, s, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
    return s**2 / (len(z) - 1), vt, len(z)


def test_attn_input_pca_directions_match_numpy_pca_of_the_same_features(short_backend, tmp_path):
    tiny_backend = short_backend
    method = AttnInputPCA(num_samples=3, first_seed=5000, discovery_batch_size=3, layers=[LAYER], directions=5,
                       window=[0.0, 1.0])
    method.setup(tiny_backend, cache_dir=str(tmp_path))
    got = method.directions[LAYER]
    variances, vt, n = numpy_pca(tiny_backend, [5000, 5001, 5002], LAYER)
    assert n == 3 * 2 * 16  # samples x steps in (0, T) (666, 333) x tokens
    np.testing.assert_allclose(got.eigenvalues[:10], variances[:10], rtol=1e-6)
    np.testing.assert_allclose(np.abs(np.sum(got.eigenvectors[:5] * vt[:5], axis=1)), 1.0, atol=1e-7)
    biggest = got.eigenvectors[np.arange(64), np.abs(got.eigenvectors).argmax(1)]
    assert np.all(biggest > 0) and np.all(np.diff(got.eigenvalues) <= 0)
    # a second setup reads the cache and still reports what the computation took
    again = AttnInputPCA(num_samples=3, first_seed=5000, layers=[LAYER], directions=5, window=[0.0, 1.0])
    again.setup(tiny_backend, cache_dir=str(tmp_path))
    assert again.discovery_cached and np.array_equal(again.directions[LAYER].eigenvectors, got.eigenvectors)
    assert again.describe()["discovery_compute_seconds"] == method.discovery_compute_seconds > 0


# -- random directions ---------------------------------------------------------------------------
def test_random_directions_are_unit_seeded_and_per_layer(tiny_backend):
    def make(seed, directions, layers=("mid_block.attentions.0", LAYER)):
        method = RandomDirections(seed=seed, directions=directions, layers=list(layers))
        method.setup(tiny_backend)
        return {name: d.eigenvectors for name, d in method.directions.items()}

    a, b, c = make(3, [0, 2]), make(3, 3), make(4, 3)
    for name, vectors in a.items():
        assert vectors.shape == (3, 64)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-12)
        assert np.array_equal(vectors, b[name]) and not np.allclose(vectors, c[name])
        rng = np.random.default_rng([3, zlib.crc32(name.encode())])  # the documented recipe
        draws = rng.standard_normal((3, 64))
        np.testing.assert_allclose(vectors, draws / np.linalg.norm(draws, axis=1, keepdims=True), rtol=1e-12)
    assert not np.allclose(a["mid_block.attentions.0"], a[LAYER])
    assert np.array_equal(make(3, 1, [LAYER])[LAYER], a[LAYER][:1]), "independent of the other layers and count"


# -- automatic labels for a baseline's own directions --------------------------------------------
class FakeClip:
    """Deterministic stand-ins for CLIP embeddings: the mean colour, and fixed text vectors."""

    weights = "fake"

    def __init__(self, **_) -> None:  # configs hand it the CLIP node's keys (weights)
        pass

    def embed_images(self, images):
        return images.mean(dim=(2, 3))

    def embed_texts(self, texts):
        table = {"x": [0.0, 0.0, 0.0], "red": [1.0, 0.0, 0.0], "blue": [0.0, 0.0, 1.0]}
        return torch.tensor([table[t] for t in texts])


def test_baselines_label_their_own_directions(short_backend):
    backend = short_backend
    method = RandomDirections(directions=[0, 1], labels={1: {"label": "kept", "source": "a", "target": "b"}},
                              window=[0.0, 1.0], alphas=[0.4],
                              labeling={"num_probes": 1, "first_seed": 7, "alpha": 0.4,
                                        "vocabulary": [["redder", "x", "red"], ["bluer", "x", "blue"]],
                                        "clip": {"_target_": "test_baselines.FakeClip"}})
    method.setup(backend)
    assert method.labels[1]["label"] == "kept", "labels given in config win"
    entry = method.labels[0]
    assert entry["label"] in ("redder", "bluer") and entry["labeled_by"].endswith("weights=fake")
    # recompute the winning (attribute, sign) independently: each sign's colour change from the unedited probe
    probe = [Sample(id="p", seed=7)]
    unedited = backend.generate(probe).mean(dim=(2, 3))[0].double()
    scores = {}
    for sign in (1, -1):
        with method.control(backend, [{**method.edits()[0], "alpha": 0.4 * sign}]) as control:
            colour = backend.generate(probe, control).mean(dim=(2, 3))[0].double()
        change = torch.nn.functional.normalize(colour - unedited, dim=0)
        scores.update({("redder", sign): float(change[0]), ("bluer", sign): float(change[2])})
    best, sign = max(scores, key=scores.get)
    assert (entry["label"], entry["sign"]) == (best, sign)
    assert entry["score"] == pytest.approx(scores[best, sign], abs=1e-5)
    edit = method.edits()[0]  # alpha +0.4: the label's texts if its sign is +, else reversed
    texts = (entry["source"], entry["target"])
    assert (edit["source_text"], edit["target_text"]) == (texts if sign > 0 else texts[::-1])
    with pytest.raises(ConfigError, match="lacks"):
        auto_label(method, backend, {"alpha": 0.4})


# -- the comparison experiment ----------------------------------------------------------------
COMPARED = {"sad": "sad.SAD", "pullback": "pullback.Pullback", "pullback_move": "pullback_move.PullbackMove",
            "hspace_pca": "hspace_pca.HSpacePCA", "attn_input_pca": "attn_input_pca.AttnInputPCA",
            "random": "random_directions.RandomDirections"}


def test_celebahq_compare_composes_in_step_with_celebahq_sad():
    sad = compose("config", ["experiment=celebahq_sad"])
    directions = compose("directions", [])
    for choice, target in COMPARED.items():
        cfg = compose("config", ["experiment=celebahq_compare", f"compare={choice}"])
        assert cfg.name == "celebahq_compare" and cfg.method._target_ == f"attnedit.methods.{target}"
        for key in ("model.path", "model.num_inference_steps", "model.eta", "dataset.num_samples",
                    "dataset.first_seed", "method.directions", "method.alphas", "batch_size", "tables.reference"):
            assert OmegaConf.select(cfg, key) == OmegaConf.select(sad, key), key
        assert list(cfg.metrics) == list(sad.metrics)
        if choice == "sad":
            assert cfg.method.directions_file == sad.method.directions_file
        else:
            assert "directions_file" not in cfg.method
            for key in ("num_probes", "first_seed", "alpha", "vocabulary"):
                assert cfg.method.labeling[key] == directions.labeling[key], key
    # the study's largest |alpha| is each published protocol's own edit (conf/compare/*.yaml)
    official = OmegaConf.load(REPO / "conf" / "method" / "pullback.yaml")
    biggest = max(abs(a) for a in sad.method.alphas)
    pullback = compose("config", ["experiment=celebahq_compare", "compare=pullback"]).method
    assert biggest * pullback.guidance_edit_step == max(abs(a) for a in official.alphas) * official.guidance_edit_step == 1.0
    assert (pullback.t_edit, pullback.rank, pullback.guidance_steps, pullback.guidance_scale) == (1.0, 50, 16, 0.1)
    hspace = compose("config", ["experiment=celebahq_compare", "compare=hspace_pca"]).method
    published = OmegaConf.load(REPO / "conf" / "method" / "hspace_pca.yaml")
    assert biggest * hspace.strength == pytest.approx(max(abs(a) for a in published.alphas) * published.strength) == 0.1


@pytest.fixture(scope="module")
def all_runs(tmp_path_factory):
    """Each baseline as the comparison runs it (experiment=celebahq_compare compare=<name>, its
    own directions labeled in setup by a stand-in CLIP) on the tiny model; SAD by method=sad."""
    root = tmp_path_factory.mktemp("compare")
    model = build_tiny_ddpm(root / "tiny32", sample_size=32)  # the tiny DDPM at a quarter of the pixels
    # pullback one case per batch: a sample's second batch must reuse its decomposition
    extra = {"pullback": ["method.rank=2", "method.min_iters=0", "method.max_iters=1", "method.guidance_steps=2",
                          "batch_size=1"],
             "pullback_move": ["method.max_iters=1", "batch_size=2"],
             "hspace_pca": ["method.num_samples=4", "batch_size=2"], "attn_input_pca": ["method.num_samples=4", "batch_size=2"]}
    labeling = ["labeling.clip._target_=test_baselines.FakeClip", "labeling.num_probes=1",
                "labeling.vocabulary=[[redder,x,red],[bluer,x,blue]]"]
    runs = {}
    for method in COMPARED:
        overrides = [o for o in run_overrides(root, model)
                     if not o.startswith(("dataset.", "model.num_", "method.alphas", "batch_size"))]
        common = [*overrides, "dataset.num_samples=2", "model.num_inference_steps=3", "method.alphas=[0.4]",
                  "save_images=false", *extra.get(method, ["batch_size=2"])]
        if method == "sad":  # compare=sad reads the labeled directions file of the recipe's step 1
            cfg = compose("config", ["method=sad", *common,
                                     f"tables.reference={REPO}/experiments/celebahq_sad/reference/sad_celebahq_table2.csv"])
        else:
            cfg = compose("config", ["experiment=celebahq_compare", f"compare={method}", *common, *labeling])
        runs[method] = Runner(cfg).run()
    return runs


def test_all_methods_produce_rows_with_the_same_core_columns(all_runs):
    frames = {m: pd.read_parquet(d / "cases") for m, d in all_runs.items()}
    keys = None
    for method, frame in frames.items():
        assert set(CORE) <= set(frame.columns), (method, set(CORE) - set(frame.columns))
        assert (frame.method == method).all() and len(frame) == 4
        if method != "sad":  # labeled in setup by the comparison's labeling
            assert frame.label.str.lstrip("-").isin(["redder", "bluer"]).all(), method
            assert frame.source_text.isin(["x", "red", "blue"]).all(), method
        cases = sorted(zip(frame.sample_id, frame.direction, frame.alpha))
        assert keys is None or cases == keys, "same samples, directions and alphas"
        keys = cases
    for method in ("pullback", "pullback_move"):
        rows = frames[method]
        per_sample = rows.groupby("sample_id").discovery_seconds_per_sample.first()
        assert (per_sample > 0).all() and rows.x_step_ratio.gt(0).all() and (rows.position == "x_t").all()
        # honest accounting: the shares in seconds_per_case add up to one decomposition per sample
        assert rows.discovery_share_seconds.sum() == pytest.approx(per_sample.sum(), rel=1e-9)
        assert (rows.seconds_per_case >= rows.discovery_share_seconds).all()
    assert (frames["pullback"].discovery_share_seconds == 0).sum() == 2, "each sample decomposed once, in its first batch"
    official = frames["pullback"]
    assert official.sign_flipped.isin([True, False]).all() and official.sign_agreement.between(0, 1).all()
    assert (official.pullback_iterations == 1).all() and (official.guidance_unet_evals == 4).all()
    assert (official.performance_boosting_t == 333).all() and (frames["hspace_pca"].position == "mid_block_output").all()
    assert (official.guidance_edit_step == 2.5).all() and (frames["hspace_pca"].strength == 0.25).all()
    assert frames["hspace_pca"].delta_h_ratio.gt(0).all()


def test_one_comparison_table_and_the_editing_time_table(all_runs, tmp_path, capsys):
    dirs = [str(d) for d in all_runs.values()]
    tables([*dirs, "--out", str(tmp_path)])
    assert "comparison:" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "comparison.csv", keep_default_na=False)
    assert table.method.tolist() == [*COMPARED, "SAD", "Riemannian pullback"]
    stats = ["mean", "std", "ci_low", "ci_high", "n", "n_nan", "n_failed"]  # CSV: numeric columns (14.8)
    assert list(table.columns) == ["method", "n", "samples", *(f"{m}_{s}" for m in ("ssim", "psnr") for s in stats),
                                   "source"]
    n = len(COMPARED)
    assert table.source[:n].str.startswith("measured").all() and table.source[n].startswith("SAD paper")
    table = table[:n].astype({"n": int})
    assert (table.n == 4).all()
    for method, run_dir in all_runs.items():
        frame = pd.read_parquet(run_dir / "cases")
        row = table.set_index("method").loc[method]
        mean, std = float(row.psnr_mean), float(row.psnr_std)
        assert mean == pytest.approx(frame.psnr.mean(), abs=1e-4) and std == pytest.approx(frame.psnr.std(ddof=0), abs=1e-4)
    assert comparison_table(dirs).method.tolist() == table.method.tolist(), "published rows only in the files"
    for name in ("comparison", "comparison_by_alpha", "comparison_editing_time"):
        for suffix in ("md", "csv", "tex"):
            assert (tmp_path / f"{name}.{suffix}").exists()
    assert "RANDOM MODEL WEIGHTS" in (tmp_path / "comparison.md").read_text()

    timing = pd.read_csv(tmp_path / "comparison_editing_time.csv").set_index("method")
    assert "measured on cpu on" in (tmp_path / "comparison_editing_time.md").read_text()
    for method, run_dir in all_runs.items():  # recompute from the rows and manifest
        frame = pd.read_parquet(run_dir / "cases")
        manifest = json.loads((run_dir / "manifest.json").read_text())["method"]
        once = manifest.get("discovery_compute_seconds") or manifest["discovery_seconds"]
        share = frame.get("discovery_share_seconds", pd.Series(0.0, index=frame.index)).fillna(0.0)
        per_sample = (frame.groupby("sample_id").discovery_seconds_per_sample.first().mean()
                      if method.startswith("pullback") else 0)
        edit = (frame.seconds_per_case - share).mean()
        assert timing.edit_s[method] == pytest.approx(edit, rel=1e-6)
        assert timing.total_s[method] == pytest.approx(once + 100 * per_sample + 1500 * edit, rel=1e-6)
    assert timing.discovery.to_dict() == {"sad": "once per model", "pullback": "per sample", "pullback_move": "per sample",
                                          "hspace_pca": "once per model", "attn_input_pca": "once per model",
                                          "random": "once per model"}
    assert timing.discovery_once_s["pullback"] > 0, "the sign reference's decomposition, once per run"
    assert timing.total_vs_sad["sad"] == 1.0
    assert (Path(dirs[0]) / "tables" / "editing_time.csv").exists(), "each run's own tables hold its timing too"


def test_run_directories_from_before_the_rename_read_as_attn_input_pca(all_runs, tmp_path):
    """Old runs of the attention-input PCA say method=hspace_pca; they are read under the
    name of what they are, and the h-space PCA's own rows keep theirs."""
    import shutil

    old = tmp_path / "old_hspace_pca"
    shutil.copytree(all_runs["attn_input_pca"], old)
    for part in RunStore(old).part_files():
        frame = pd.read_parquet(part)
        frame.assign(method="hspace_pca").to_parquet(part, index=False)
    assert set(pd.read_parquet(old / "cases").method) == {"hspace_pca"}
    assert set(RunStore(old).read().method) == {"attn_input_pca"}
    table = comparison_table([old, all_runs["hspace_pca"]])
    assert table.method.tolist() == ["attn_input_pca", "hspace_pca"]
    assert timing_table([old]).method.tolist() == ["attn_input_pca"]


def test_timing_table_marks_runs_from_different_machines(all_runs, tmp_path):
    import shutil

    moved = tmp_path / "elsewhere"
    shutil.copytree(all_runs["random"], moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["host"]["hostname"] = "another-host"
    (moved / "manifest.json").write_text(json.dumps(manifest))
    from attnedit.report.timing import timing_title

    table = timing_table([all_runs["sad"], moved])
    assert MIXED_MACHINES_MARK in timing_title(table) and set(table.host) == {table.host[0], "another-host"}


def test_comparison_means_leave_out_alpha_zero(all_runs, tmp_path):
    """alpha = 0 rows (the unedited sample) stay out of the means over alphas, not out of the per-alpha table."""
    import shutil

    moved = tmp_path / "with_zero"
    shutil.copytree(all_runs["sad"], moved)
    store = RunStore(moved)
    frame = store.read()
    frame.loc[frame.index[:2], "alpha"] = 0.0
    for part in store.part_files():
        part.unlink()
    frame.to_parquet(store.cases_dir / "part-00000.parquet", index=False)
    table = comparison_table([moved])
    edits = frame[frame.alpha != 0]
    assert table.n.tolist() == [len(edits)] == [2]
    assert table.psnr[0] == f"{edits.psnr.mean():.4f} ± {edits.psnr.std(ddof=0):.4f}"
    title, tables, _ = build_comparison([moved])
    assert sorted(tables["comparison_by_alpha"].alpha) == [0.0, 0.4]
    assert "alpha = 0 rows (no edit) left out" in title

"""The h-space PCA baseline of Haas et al. (methods/hspace_pca.py) against numpy PCA of
mid-block outputs captured by plain hooks, step by step."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from attnedit.data.base import Sample
from attnedit.errors import ConfigError
from attnedit.methods.hspace_pca import HSpacePCA, per_step_pca
from harness import REPO
from jacobian_reference import largest_positive


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


def eta_one_run(backend, seed, add=None):
    """DDIM at eta 1 on every step as diffusers' scheduler steps it, x_T and then each step's
    variance noise from one CPU generator seeded with ``seed``; ``add(j, h)``: the change
    made to the mid-block output at step j (None: unedited)."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(backend.scheduler.config)
    scheduler.set_timesteps(backend.num_inference_steps)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(backend.image_shape, generator=generator).double()[None]
    now = {}
    hook = None if add is None else backend.unet.mid_block.register_forward_hook(
        lambda m, i, out: out + add(now["j"], out))
    try:
        with torch.no_grad():
            for j, t in enumerate(scheduler.timesteps):
                now["j"] = j
                noise = torch.randn((1, *backend.image_shape), generator=generator, dtype=torch.float64)
                x = scheduler.step(backend.unet(x, t).sample, t, x, eta=1.0, variance_noise=noise).prev_sample
    finally:
        if hook is not None:
            hook.remove()
    return (x.float() / 2 + 0.5).clamp(0, 1)


def test_edit_eta_one_edits_eta_one_samples_with_their_stored_noise(small_backend):
    """edit_eta=1 (the reference's): every step at eta 1 with the sample's own noise; alpha 0
    is then the unedited eta-1 sample (the runner's reference via sampler_control), not the
    eta-0 one, so it is no identity; null keeps model.eta and alpha 0 an identity."""
    method = HSpacePCA(directions=[1], alphas=[0.0, 1.0], num_samples=6, first_seed=5000, edit_eta=1.0, progress=False)
    method.setup(small_backend)
    comps, svals = numpy_hspace_pca(small_backend, list(range(5000, 5006)), eta=1.0)
    size = np.sqrt(49_999) * svals[:, 1] / np.sqrt(5)
    unedited = eta_one_run(small_backend, 3)
    edited = eta_one_run(small_backend, 3, lambda j, h: torch.from_numpy(0.1 * size[j] * comps[j, 1]).view(h.shape))
    sample = [Sample(id="a", seed=3)]
    small_backend.reference(sample)  # stores the eta-0 states edits may start from
    for edit, want in zip(method.edits(), (unedited, edited)):
        with method.control(small_backend, [edit]) as control:
            got = small_backend.generate(sample, control)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        assert control.row_extras[0]["edit_eta"] == 1.0
    torch.testing.assert_close(small_backend.generate(sample, method.sampler_control(small_backend)), unedited,
                               atol=1e-6, rtol=0)
    assert (unedited - small_backend.reference(sample)).abs().max() > 1e-3  # eta 1 is another sample
    assert not method.is_identity(method.edits()[0]) and method.identity_edit()["alpha"] == 0.0
    assert method.describe()["edit_eta"] == 1.0
    default = HSpacePCA(directions=[1], alphas=[0.0], num_samples=6, first_seed=5000, progress=False)
    default.setup(small_backend)
    assert default.sampler_control(small_backend) is None and default.is_identity(default.edits()[0])
    assert "edit_eta" not in default.edits()[0], "not an edit key: case ids stay those of earlier runs"
    with pytest.raises(ConfigError, match="edit_eta"):
        HSpacePCA(edit_eta=2.0)


@pytest.mark.parametrize("n, d", [(12, 40), (40, 12)])  # both sides of the Gram matrix
def test_per_step_pca_is_the_svd_of_the_centered_features(n, d):
    """Against numpy's float64 SVD of the centered matrix, fewer and more samples than dims."""
    rng = np.random.default_rng(n)
    x = (rng.standard_normal((n, d)) * (1.0 + np.arange(d))[::-1] + rng.standard_normal(d)).astype(np.float32)
    comps, svals = per_step_pca(torch.from_numpy(x), 4)
    z = x.astype(np.float64)
    _, s, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
    np.testing.assert_allclose(svals.numpy(), s[:4], rtol=1e-12)
    np.testing.assert_allclose(comps.numpy(), largest_positive(vt[:4]), atol=1e-10)


def test_the_benchmarks_incremental_pca_is_the_pca_of_all_batches():
    """benchmarks/bench_baselines.py's stand-in for sklearn's IncrementalPCA (the reference's
    fit): keeping every component, three partial fits are numpy's PCA of the whole matrix."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_baselines import IncrementalPCA

    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 8)) * (1.0 + np.arange(8)) + rng.standard_normal(8) * 5
    ipca = IncrementalPCA(8)
    for i in range(0, 30, 10):
        ipca.partial_fit(x[i: i + 10])
    _, s, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    np.testing.assert_allclose(ipca.singular_values, s, rtol=1e-10)
    np.testing.assert_allclose(ipca.components, largest_positive(vt), atol=1e-10)
    np.testing.assert_allclose(ipca.mean, x.mean(0), rtol=1e-12)

"""The h-space PCA baseline of Haas et al. (methods/hspace_pca.py) against numpy PCA of
mid-block outputs captured by plain hooks, step by step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnedit.data.base import Sample
from attnedit.errors import ConfigError
from attnedit.methods.hspace_pca import HSpacePCA
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

"""The attention-input PCA baseline (methods/attn_input_pca.py): PCA of the features SAD
edits, against numpy PCA of the same features captured by plain hooks."""

from __future__ import annotations

import numpy as np

from attnedit.methods.attn_input_pca import AttnInputPCA
from ddpm_models import TINY_LAYER


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
    method = AttnInputPCA(num_samples=3, first_seed=5000, discovery_batch_size=3, layers=[TINY_LAYER],
                          directions=5, window=[0.0, 1.0])
    method.setup(tiny_backend, cache_dir=str(tmp_path))
    got = method.directions[TINY_LAYER]
    variances, vt, n = numpy_pca(tiny_backend, [5000, 5001, 5002], TINY_LAYER)
    assert n == 3 * 2 * 16  # samples x steps in (0, T) (666, 333) x tokens
    np.testing.assert_allclose(got.eigenvalues[:10], variances[:10], rtol=1e-6)
    np.testing.assert_allclose(np.abs(np.sum(got.eigenvectors[:5] * vt[:5], axis=1)), 1.0, atol=1e-7)
    biggest = got.eigenvectors[np.arange(64), np.abs(got.eigenvectors).argmax(1)]
    assert np.all(biggest > 0) and np.all(np.diff(got.eigenvalues) <= 0)
    # a second setup reads the cache and still reports what the computation took
    again = AttnInputPCA(num_samples=3, first_seed=5000, layers=[TINY_LAYER], directions=5, window=[0.0, 1.0])
    again.setup(tiny_backend, cache_dir=str(tmp_path))
    assert again.discovery_cached and np.array_equal(again.directions[TINY_LAYER].eigenvectors, got.eigenvectors)
    assert again.describe()["discovery_compute_seconds"] == method.discovery_compute_seconds > 0

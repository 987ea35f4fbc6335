"""Random directions (methods/random_directions.py): unit vectors, seeded per layer by the
documented recipe."""

from __future__ import annotations

import zlib

import numpy as np

from attnedit.methods.random_directions import RandomDirections
from ddpm_models import TINY_LAYER


def test_random_directions_are_unit_seeded_and_per_layer(tiny_backend):
    def make(seed, directions, layers=("mid_block.attentions.0", TINY_LAYER)):
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
    assert not np.allclose(a["mid_block.attentions.0"], a[TINY_LAYER])
    assert np.array_equal(make(3, 1, [TINY_LAYER])[TINY_LAYER], a[TINY_LAYER][:1]), \
        "independent of the other layers and count"

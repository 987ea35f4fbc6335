"""Random unit directions: the control for any claim that a discovered direction means
something. Injected exactly as SAD's (only the directions differ).

Direction k of a layer is row k of a standard normal matrix from numpy's PCG64 seeded
by (seed, crc32(layer name)), normalized: it depends on the seed and the layer only,
not on which other layers or how many directions a run asks for.
"""

from __future__ import annotations

import zlib

import numpy as np

from attnedit.methods.auto_labels import AutoLabeledDirections
from attnedit.methods.directions import LayerDirections


def random_unit_directions(count: int, dim: int, seed: int, layer: str) -> np.ndarray:
    rng = np.random.default_rng([int(seed), zlib.crc32(layer.encode())])
    vectors = rng.standard_normal((count, dim))  # row-major: row k is the same for any count > k
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class RandomDirections(AutoLabeledDirections):
    def __init__(self, name: str = "random", seed: int = 0, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.seed = int(seed)

    def is_identity(self, edit) -> bool:
        return float(edit["alpha"]) == 0.0

    def discover(self, backend, cache_dir):
        count = max(self.direction_ids, default=-1) + 1
        out = {}
        for name, attn in self.layers.items():
            vectors = random_unit_directions(count, attn.to_q.in_features, self.seed, name)
            out[name] = LayerDirections(np.zeros(count), vectors)  # no spectrum: zeros, by convention
        return out

    def describe(self):
        return {**super().describe(), "discovery": "once_per_model", "seed": self.seed}

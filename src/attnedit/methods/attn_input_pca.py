"""Attention-input PCA (a data-dependent baseline): principal components of the features
SAD edits, over generated samples. Not the h-space PCA of Haas et al. / Asyrp (that is
methods/hspace_pca.py, PCA of the mid-block output); stored rows named ``hspace_pca``
that edited an attention input are read under this name
(attnedit.store.run_store.LEGACY_METHOD_NAMES).

Features: the input Z of each selected self-attention layer (``position`` as SAD's:
after its GroupNorm, or the layer input), at every sampler step inside the edit window,
over ``num_samples`` samples generated from seeds ``first_seed ...`` (keep them apart
from the evaluation dataset's seeds). Every spatial token is one observation of a
C-dim vector, so the components live in the space SAD's directions do and are injected
by the same code (only the directions differ). Mean-centered covariance accumulated in
float64; eigenvalues (variances) descending; signs canonical as SAD's.

Directions are cached under <cache_dir>/directions keyed by the model weights and every
setting above; the cache remembers how long the computation took, for the timing table.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from torch import Tensor, nn
from tqdm.auto import tqdm

from attnedit.errors import ConfigError
from attnedit.methods.auto_labels import AutoLabeledDirections
from attnedit.methods.directions import LayerDirections, canonical_signs, read_directions, write_directions
from attnedit.methods.injection import attention_input_hooks, timestep_of_call


class TokenMoments:
    """Running sum and Gram matrix of C-dim token vectors, in float64."""

    def __init__(self) -> None:
        self.count = 0
        self.total: Tensor | None = None
        self.gram: Tensor | None = None

    def add(self, features: Tensor) -> None:
        tokens = features.detach().flatten(2).transpose(1, 2).reshape(-1, features.shape[1]).double()
        if self.total is None:
            self.total, self.gram = tokens.sum(0), tokens.T @ tokens
        else:
            self.total += tokens.sum(0)
            self.gram += tokens.T @ tokens
        self.count += len(tokens)

    def components(self) -> LayerDirections:
        if self.count < 2:
            raise ConfigError("attention-input PCA saw fewer than 2 feature tokens; raise method.num_samples or widen method.window")
        mean = (self.total / self.count).cpu().numpy()
        cov = (self.gram.cpu().numpy() - self.count * np.outer(mean, mean)) / (self.count - 1)
        values, vectors = np.linalg.eigh((cov + cov.T) / 2)
        order = np.argsort(values)[::-1]
        return LayerDirections(values[order], canonical_signs(vectors[:, order].T))


@contextlib.contextmanager
def capture_attention_inputs(
    unet: nn.Module,
    layers: dict[str, nn.Module],
    sink: Callable[[str, Tensor], None],
    *,
    position: str,
    window: tuple[float, float],
    num_train_timesteps: int,
) -> Iterator[None]:
    """Call ``sink(layer, Z)`` with each layer's attention input while lo*T < t < hi*T."""
    lo, hi = window[0] * num_train_timesteps, window[1] * num_train_timesteps
    now: dict[str, int] = {}

    def record_timestep(module, args, kwargs):
        now["t"] = timestep_of_call(args, kwargs)

    def after_norm(name):
        def hook(module, inputs, output):
            if lo < now["t"] < hi:
                sink(name, output)

        return hook

    def before_norm(name):
        def hook(module, args, kwargs):
            if lo < now["t"] < hi:
                sink(name, kwargs["hidden_states"] if "hidden_states" in kwargs else args[0])

        return hook

    with attention_input_hooks(unet, layers, position, record_timestep, after_norm, before_norm):
        yield


class AttnInputPCA(AutoLabeledDirections):
    def __init__(
        self,
        name: str = "attn_input_pca",
        num_samples: int = 32,
        first_seed: int = 1_000_000,
        discovery_batch_size: int = 8,
        progress: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.progress = bool(progress)
        if int(num_samples) < 1 or int(discovery_batch_size) < 1:
            raise ConfigError(
                f"method.num_samples={num_samples} and method.discovery_batch_size={discovery_batch_size} must be >= 1"
            )
        self.num_samples = int(num_samples)
        self.first_seed = int(first_seed)
        self.discovery_batch_size = int(discovery_batch_size)
        self.discovery_cached = False
        self.discovery_compute_seconds: float | None = None

    def _cache_path(self, backend, cache_dir: str | None) -> Path | None:
        if not cache_dir:
            return None
        key = {
            "weights": backend.describe()["weights_sha256_16"],
            "sampler": backend.describe()["settings"].get("sampler"),
            "layers": sorted(self.layers),
            "position": self.position,
            "window": list(self.window),
            "num_samples": self.num_samples,
            "first_seed": self.first_seed,
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return Path(cache_dir) / "directions" / f"attn_input_pca-{digest}.safetensors"

    def features_pass(self, backend, sink: Callable[[str, Tensor], None]) -> None:
        """Generate the discovery samples, handing every in-window attention input to ``sink``."""
        seeds = list(range(self.first_seed, self.first_seed + self.num_samples))
        batches = [seeds[i : i + self.discovery_batch_size] for i in range(0, len(seeds), self.discovery_batch_size)]
        with capture_attention_inputs(
            backend.unet, self.layers, sink, position=self.position, window=self.window,
            num_train_timesteps=backend.num_train_timesteps,
        ):
            for batch in tqdm(batches, desc=f"{self.name}: discovery samples", unit="batch", leave=False,
                              disable=not self.progress):
                backend.denoise(backend.initial_noise(batch))

    def is_identity(self, edit) -> bool:
        return float(edit["alpha"]) == 0.0

    def discover(self, backend, cache_dir):
        cache = self._cache_path(backend, cache_dir)
        timing = cache.with_suffix(".json") if cache is not None else None
        if cache is not None and cache.exists() and timing.exists():
            self.discovery_cached = True
            self.discovery_compute_seconds = float(json.loads(timing.read_text())["seconds"])
            return read_directions(cache)
        moments = {name: TokenMoments() for name in self.layers}
        began = time.perf_counter()
        self.features_pass(backend, lambda name, z: moments[name].add(z))
        found = {name: m.components() for name, m in moments.items()}
        self.discovery_compute_seconds = time.perf_counter() - began
        if cache is not None:
            write_directions(cache, found)
            timing.write_text(json.dumps({"seconds": self.discovery_compute_seconds}))
        return found

    def describe(self):
        return {
            **super().describe(),
            "discovery": "once_per_model",
            "discovery_cached": self.discovery_cached,
            "discovery_compute_seconds": self.discovery_compute_seconds,
            "num_samples": self.num_samples,
            "seeds": [self.first_seed, self.first_seed + self.num_samples - 1],
            "features": f"attention input ({self.position}), tokens as observations, steps inside the window",
        }

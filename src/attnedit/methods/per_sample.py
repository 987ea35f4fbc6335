"""What the pullback methods share: per-sample directions at one step t_edit of the
sampler.

Cost is per sample, so it is counted per edit. The decomposition runs inside the
sampler's latent hook at t_edit; a sample is recognized by its x_t there (equal within
a relative 1e-4: batches of other sizes round differently), so all edits of one sample
reuse one decomposition within a run even across batches. Each row reports
``discovery_seconds_per_sample`` (that sample's decomposition time) and
``discovery_share_seconds`` (the part of its ``seconds_per_case`` spent decomposing: this
batch's decomposition time / batch size). Controls carry ``first_edit_timestep``: every
step before it equals the unedited run.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor

from attnedit.errors import ConfigError
from attnedit.methods.auto_labels import auto_label
from attnedit.methods.base import EditMethod, as_index_list
from attnedit.methods.labeling import LabeledEdits, case_texts
from attnedit.methods.local_basis import plain_attention

SAME_SAMPLE_RTOL = 1e-4  # x_t of one sample in two batches differs by rounding (~1e-7), of two samples by O(1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def nearest_step(steps: list[int], fraction: float, num_train_timesteps: int) -> int:
    """The sampler timestep nearest fraction * T (ties: the noisier), as edit.py:583."""
    target = fraction * num_train_timesteps
    return min(steps, key=lambda s: (abs(s - target), -s))


class SampleCache:
    """Per-sample results keyed by the sample's x_t at the edit step, bounded (the runner
    walks samples in order)."""

    def __init__(self, size: int) -> None:
        self.size = max(1, int(size))
        self.entries: OrderedDict[int, tuple[Tensor, Any]] = OrderedDict()
        self._next = 0

    def get(self, x: Tensor) -> Any | None:
        for key, (seen, value) in self.entries.items():
            if seen.shape == x.shape and float((seen - x.detach().cpu().double()).norm()) <= SAME_SAMPLE_RTOL * float(seen.norm()):
                self.entries.move_to_end(key)
                return value
        return None

    def put(self, x: Tensor, value: Any) -> None:
        self.entries[self._next] = (x.detach().cpu().double(), value)
        self._next += 1
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def clear(self) -> None:
        self.entries.clear()


def state_at(backend, seed: int, timestep: int) -> Tensor:
    """x_t of the unedited sample of ``seed`` at ``timestep`` (the sampler stops there)."""

    class _Reached(Exception):
        pass

    def stop(t: int, x: Tensor) -> Tensor:
        if t == timestep:
            raise _Reached(x)
        return x

    try:
        backend.denoise(backend.initial_noise([seed]), stop)
    except _Reached as reached:
        return reached.args[0][0]
    raise ConfigError(f"timestep {timestep} is not a step of the sampler {backend.timesteps()}")


class PerSampleDirections(LabeledEdits, EditMethod):
    """What both pullback methods share: direction indices, alphas, labels, the edit step."""

    def __init__(self, name, directions, alphas, t_edit, labels, labeling, cache_samples) -> None:
        if not 0.0 < float(t_edit) <= 1.0:
            raise ConfigError(f"method.t_edit={t_edit} must be a fraction of T in (0, 1]")
        self.name = name
        self.direction_ids = as_index_list(directions)
        if not self.direction_ids or min(self.direction_ids) < 0:
            raise ConfigError(f"method.directions={directions} must name at least one index >= 0")
        self.alphas = [float(a) for a in alphas]
        self.t_edit = float(t_edit)
        self.labels = {int(k): dict(v) for k, v in (labels or {}).items()}
        self.labeling = labeling
        self.labeling_seconds = 0.0
        self.cache = SampleCache(cache_samples)
        self.timestep: int | None = None
        self.discovery_seconds = 0.0

    @property
    def needed(self) -> int:
        return max(self.direction_ids) + 1

    def setup(self, backend, cache_dir: str | None = None) -> None:
        self.timestep = nearest_step(backend.timesteps(), self.t_edit, backend.num_train_timesteps)
        self.cache.clear()

    def forget_samples(self) -> None:
        self.cache.clear()

    def _label(self, backend) -> None:
        if self.labeling:
            self.labeling_seconds = auto_label(self, backend, self.labeling)

    def _edits(self, shared: dict[str, Any]) -> list[dict[str, Any]]:
        if self.timestep is None:
            raise ConfigError(f"{type(self).__name__}.edits() needs setup(backend) first (it picks the step of t_edit)")
        return [
            {"direction": k, "label": self.label(k), "alpha": a, **shared, **case_texts(self.labels.get(k), a)}
            for k in self.direction_ids
            for a in self.alphas
        ]

    def basis(self, backend, x_t: Tensor) -> tuple[Any, float, bool]:
        """(this sample's decomposition, seconds it took, whether computed now)."""
        found = self.cache.get(x_t)
        if found is not None:
            return (*found, False)
        sync(x_t.device)
        start = time.perf_counter()
        with plain_attention(backend.unet):
            value = self.decompose(backend, x_t)
        sync(x_t.device)
        seconds = time.perf_counter() - start
        self.cache.put(x_t, (value, seconds))
        return value, seconds, True

    def decompose(self, backend, x_t: Tensor) -> Any:
        raise NotImplementedError

    def _bases(self, backend, x: Tensor) -> tuple[list[tuple[Any, float]], float]:
        """Per batch element (decomposition, its seconds); the seconds computed in this batch."""
        out, new_seconds = [], 0.0
        for xi in x:
            value, seconds, computed = self.basis(backend, xi)
            out.append((value, seconds))
            new_seconds += seconds if computed else 0.0
        return out, new_seconds

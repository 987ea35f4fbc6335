"""Riemannian pullback editing (Park et al., NeurIPS 2023): per-sample directions.

At one timestep t_edit of the sampler, the directions of a sample are the top right
singular vectors v_k (singular values s_k) of J = d(mid-block output h)/d(x_t) at that
sample's own x_t (see local_basis.py); the edit moves x_t along v_k and denoises on:

    x_t' = x_t + alpha * v_k                    (alpha_scale=unit; ||v_k|| = 1 over C*H*W)
    x_t' = x_t + alpha * ||x_t|| * v_k          (alpha_scale=x_norm)
    x_t' = x_t + alpha * ||h|| / s_k * v_k      (alpha_scale=h_norm, the default)

h_norm makes alpha the relative change of the h-space features (to first order,
||J dx|| = alpha ||h||), as SAD's token_norm makes it the relative change of the
attention input, so one list of alphas means a like-sized edit for both. Every row
records ``x_step_ratio`` = ||x_t' - x_t|| / ||x_t||.

The public code adds an "x-space guidance" over later steps; this is the plain move.

Cost is per sample, so it is counted per edit. The decomposition runs inside the
sampler's latent hook; samples are recognized by their x_T (hash of the first step's
input), so all edits of one sample reuse one decomposition within a run even across
batches. Each row reports ``discovery_seconds_per_sample`` (that sample's decomposition
time) and ``discovery_share_seconds`` (the part of its ``seconds_per_case`` spent
decomposing: this batch's decomposition time / batch size).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections import OrderedDict
from typing import Any, Iterator

import torch
from torch import Tensor

from attnedit.errors import ConfigError
from attnedit.methods.auto_labels import auto_label
from attnedit.methods.base import EditMethod
from attnedit.methods.labeling import case_texts
from attnedit.methods.local_basis import LocalBasis, h_space, plain_attention, subspace_iteration

ALPHA_SCALES = ("unit", "x_norm", "h_norm")


def _as_index_list(directions) -> list[int]:
    if isinstance(directions, int):
        return list(range(directions))
    return [int(d) for d in directions]


def sample_key(x_T: Tensor) -> str:
    return hashlib.sha1(x_T.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Pullback(EditMethod):
    def __init__(
        self,
        name: str = "pullback",
        directions: list[int] | int = 3,
        alphas: list[float] = (-0.4, -0.2, 0.2, 0.4),
        alpha_scale: str = "h_norm",
        t_edit: float = 0.7,
        num_vectors: int | None = None,
        max_iters: int = 50,
        tol: float = 1e-4,
        seed: int = 0,
        labels: dict | None = None,
        labeling: dict | None = None,
        cache_samples: int = 4,
    ) -> None:
        if alpha_scale not in ALPHA_SCALES:
            raise ConfigError(f"method.alpha_scale={alpha_scale!r} is not one of {ALPHA_SCALES}")
        if not 0.0 < float(t_edit) <= 1.0:
            raise ConfigError(f"method.t_edit={t_edit} must be a fraction of T in (0, 1]")
        if int(max_iters) < 1 or float(tol) <= 0:
            raise ConfigError(f"method.max_iters={max_iters} must be >= 1 and method.tol={tol} > 0")
        self.name = name
        self.direction_ids = _as_index_list(directions)
        if not self.direction_ids or min(self.direction_ids) < 0:
            raise ConfigError(f"method.directions={directions} must name at least one index >= 0")
        needed = max(self.direction_ids) + 1
        self.num_vectors = needed if num_vectors is None else int(num_vectors)
        if self.num_vectors < needed:
            raise ConfigError(
                f"method.num_vectors={num_vectors} is too small for direction index {needed - 1}; "
                f"set method.num_vectors>={needed} or null"
            )
        self.alphas = [float(a) for a in alphas]
        self.alpha_scale = alpha_scale
        self.t_edit = float(t_edit)
        self.max_iters = int(max_iters)
        self.tol = float(tol)
        self.seed = int(seed)
        self.labels = {int(k): dict(v) for k, v in (labels or {}).items()}
        self.labeling = labeling
        self.labeling_seconds = 0.0
        self.cache_samples = max(1, int(cache_samples))
        self.cache: OrderedDict[str, tuple[LocalBasis, float]] = OrderedDict()
        self.timestep: int | None = None
        self.first_timestep: int | None = None
        self.discovery_seconds = 0.0  # nothing is discovered once per model

    def setup(self, backend, cache_dir: str | None = None) -> None:
        steps = backend.timesteps()
        target = self.t_edit * backend.num_train_timesteps
        self.timestep = min(steps, key=lambda s: (abs(s - target), -s))  # nearest; ties: the noisier
        self.first_timestep = steps[0]
        self.cache.clear()
        if self.labeling:
            self.labeling_seconds = auto_label(self, backend, self.labeling)

    def label(self, k: int) -> str:
        return str(self.labels.get(k, {}).get("label", f"dir{k}"))

    def texts(self, k: int) -> tuple[str | None, str | None]:
        entry = self.labels.get(k, {})
        return entry.get("source"), entry.get("target")

    def edits(self) -> list[dict[str, Any]]:
        if self.timestep is None:
            raise ConfigError("Pullback.edits() needs setup(backend) first (it picks the DDIM step of t_edit)")
        shared = {
            "layers": "mid_block",  # h-space: the Jacobian's output
            "position": "x_t",  # where the edit acts
            "alpha_scale": self.alpha_scale,
            "t_edit": self.timestep,
            "num_vectors": self.num_vectors,
            "max_iters": self.max_iters,
            "tol": self.tol,
        }
        return [
            {"direction": k, "label": self.label(k), "alpha": a, **shared, **case_texts(self.labels.get(k), a)}
            for k in self.direction_ids
            for a in self.alphas
        ]

    def basis(self, backend, key: str, x_t: Tensor) -> tuple[LocalBasis, float, bool]:
        """(basis, seconds it took, whether computed now) for one sample's x_t."""
        if key in self.cache:
            self.cache.move_to_end(key)
            return (*self.cache[key], False)
        _sync(x_t.device)
        start = time.perf_counter()
        with plain_attention(backend.unet):
            found = subspace_iteration(
                h_space(backend.unet, self.timestep), x_t, self.num_vectors, self.max_iters, self.tol, self.seed
            )
        _sync(x_t.device)
        seconds = time.perf_counter() - start
        self.cache[key] = (found, seconds)
        while len(self.cache) > self.cache_samples:  # bounded: the runner walks samples in order
            self.cache.popitem(last=False)
        return found, seconds, True

    @contextlib.contextmanager
    def control(self, backend, edits) -> Iterator["PullbackControl"]:
        if self.timestep is None:
            raise ConfigError("Pullback.control() needs setup(backend) first")
        yield PullbackControl(self, backend, list(edits))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "discovery": "per_sample",
            "discovery_seconds": self.discovery_seconds,
            "directions": self.direction_ids,
            "labels": {k: self.labels.get(k) for k in self.direction_ids},
            "labeling_seconds": self.labeling_seconds,
            "t_edit_fraction": self.t_edit,
            "t_edit": self.timestep,
            "num_vectors": self.num_vectors,
            "max_iters": self.max_iters,
            "tol": self.tol,
            "seed": self.seed,
            "alpha_scale": self.alpha_scale,
            "h_space": "unet.mid_block output",
        }


class PullbackControl:
    """What generate() receives: ``latent_hook`` edits x_t at t_edit; afterwards
    ``row_extras[i]`` holds the per-case timing and convergence of batch element i."""

    def __init__(self, method: Pullback, backend, edits: list[dict[str, Any]]) -> None:
        self.method, self.backend, self.edits = method, backend, edits
        self.keys: list[str] | None = None
        self.row_extras: list[dict[str, Any]] = [{} for _ in edits]

    def latent_hook(self, t: int, x: Tensor) -> Tensor:
        if len(x) != len(self.edits):
            raise ConfigError(f"pullback: batch of {len(x)} latents but {len(self.edits)} edits")
        if t == self.method.first_timestep:
            self.keys = [sample_key(xi) for xi in x]  # x_T identifies the sample
        if t != self.method.timestep:
            return x
        if self.keys is None:
            raise RuntimeError("pullback: the latent hook did not see the first timestep of the schedule")
        bases, new_seconds = {}, 0.0
        for key, xi in zip(self.keys, x):
            if key not in bases:
                found, seconds, computed = self.method.basis(self.backend, key, xi)
                bases[key] = (found, seconds)
                new_seconds += seconds if computed else 0.0
        out = x.clone()
        for i, (key, edit) in enumerate(zip(self.keys, self.edits)):
            found, seconds = bases[key]
            k = int(edit["direction"])
            x_norm = float(x[i].double().norm())
            scale = float(edit["alpha"]) * {
                "unit": 1.0,
                "x_norm": x_norm,
                "h_norm": found.h_norm / max(float(found.singular_values[k]), 1e-12),
            }[self.method.alpha_scale]
            out[i] = x[i] + scale * found.vectors[k].to(x.device, x.dtype)
            self.row_extras[i] = {
                "discovery_seconds_per_sample": seconds,
                "discovery_share_seconds": new_seconds / len(x),
                "singular_value": float(found.singular_values[k]),
                "x_step_ratio": abs(scale) / max(x_norm, 1e-12),
                "pullback_iterations": found.iterations,
                "pullback_residual": found.residual,
                "pullback_converged": found.converged,
            }
        return out

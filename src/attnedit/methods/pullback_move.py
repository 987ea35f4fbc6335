"""``pullback_move`` (:class:`PullbackMove`), a variant of pullback (pullback.py): the single move of x_t at t_edit along v_k
(no guidance), with its own subspace iteration and alpha scales:

    x_t' = x_t + alpha * v_k                    (alpha_scale=unit; ||v_k|| = 1 over C*H*W)
    x_t' = x_t + alpha * ||x_t|| * v_k          (alpha_scale=x_norm)
    x_t' = x_t + alpha * ||h|| / s_k * v_k      (alpha_scale=h_norm, its default)

h_norm makes alpha the relative change of the h-space features (to first order).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from torch import Tensor

from attnedit.backends.base import Control
from attnedit.errors import ConfigError
from attnedit.methods.local_basis import LocalBasis, h_space, subspace_iteration
from attnedit.methods.per_sample import PerSampleDirections

ALPHA_SCALES = ("unit", "x_norm", "h_norm")


class PullbackMove(PerSampleDirections):
    """One move of x_t at t_edit along the sample's own v_k (module docstring)."""

    def __init__(
        self,
        name: str = "pullback_move",
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
        if int(max_iters) < 1 or float(tol) <= 0:
            raise ConfigError(f"method.max_iters={max_iters} must be >= 1 and method.tol={tol} > 0")
        super().__init__(name, directions, alphas, t_edit, labels, labeling, cache_samples)
        self.num_vectors = self.needed if num_vectors is None else int(num_vectors)
        if self.num_vectors < self.needed:
            raise ConfigError(
                f"method.num_vectors={num_vectors} is too small for direction index {self.needed - 1}; "
                f"set method.num_vectors>={self.needed} or null"
            )
        self.alpha_scale = alpha_scale
        self.max_iters = int(max_iters)
        self.tol = float(tol)
        self.seed = int(seed)

    def setup(self, backend, cache_dir: str | None = None) -> None:
        super().setup(backend, cache_dir)
        self._label(backend)

    def decompose(self, backend, x_t: Tensor) -> LocalBasis:
        return subspace_iteration(h_space(backend.unet, self.timestep), x_t, self.num_vectors, self.max_iters,
                                  self.tol, self.seed)

    def edits(self) -> list[dict[str, Any]]:
        return self._edits({
            "layers": "mid_block",
            "position": "x_t",
            "alpha_scale": self.alpha_scale,
            "t_edit": self.timestep,
            "num_vectors": self.num_vectors,
            "max_iters": self.max_iters,
            "tol": self.tol,
        })

    @contextlib.contextmanager
    def control(self, backend, edits) -> Iterator["PullbackMoveControl"]:
        if self.timestep is None:
            raise ConfigError("PullbackMove.control() needs setup(backend) first")
        yield PullbackMoveControl(self, backend, list(edits))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "discovery": "per_sample",
            "discovery_seconds": self.discovery_seconds,  # nothing is discovered once per model
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


class PullbackMoveControl(Control):
    """``latent_hook`` moves x_t at t_edit; ``row_extras[i]`` holds the per-case timing and
    convergence of batch element i."""

    def __init__(self, method: PullbackMove, backend, edits: list[dict[str, Any]]) -> None:
        self.method, self.backend, self.edits = method, backend, edits
        self.row_extras: list[dict[str, Any]] = [{} for _ in edits]
        self.first_edit_timestep = method.timestep

    def latent_hook(self, t: int, x: Tensor) -> Tensor:
        if len(x) != len(self.edits):
            raise ConfigError(f"pullback_move: batch of {len(x)} latents but {len(self.edits)} edits")
        if t != self.method.timestep:
            return x
        found, new_seconds = self.method._bases(self.backend, x)
        out = x.clone()
        for i, (edit, (basis, seconds)) in enumerate(zip(self.edits, found)):
            k = int(edit["direction"])
            x_norm = float(x[i].double().norm())
            scale = float(edit["alpha"]) * {
                "unit": 1.0,
                "x_norm": x_norm,
                "h_norm": basis.h_norm / max(float(basis.singular_values[k]), 1e-12),
            }[self.method.alpha_scale]
            out[i] = x[i] + scale * basis.vectors[k].to(x.device, x.dtype)
            self.row_extras[i] = {
                "discovery_seconds_per_sample": seconds,
                "discovery_share_seconds": new_seconds / len(x),
                "singular_value": float(basis.singular_values[k]),
                "x_step_ratio": abs(scale) / max(x_norm, 1e-12),
                "pullback_iterations": basis.iterations,
                "pullback_residual": basis.residual,
                "pullback_converged": basis.converged,
            }
        return out

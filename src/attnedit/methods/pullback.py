"""Riemannian pullback editing (Park et al., NeurIPS 2023): per-sample directions.

At one timestep t_edit of the sampler, the directions of a sample are the top right
singular vectors v_k of J = d(mid-block output h)/d(x_t) at that sample's own x_t (see
local_basis.py). Two methods:

``pullback`` (:class:`Pullback`): the public code's protocol, the default.
Read from enkeejunior1/Diffusion-Pullback at commit 859c012 (the CelebA-HQ script
src/scripts/main_celeba_hf_local_encoder_pullback.sh, src/main.py,
src/modules/edit.py ``EditUncondDiffusion``, src/utils/utils.py):

- basis: :func:`~attnedit.methods.local_basis.power_method` at x_t, rank 50 (the default
  of ``run_edit_local_encoder_pullback_zt``, edit.py:682, and of utils.py:167; main.py:33
  passes pca_rank=2 for the two directions it draws, too few for 15), min 10 / max 50
  iterations, tolerance 1e-4 (edit.py:725-728);
- edit: "x-space guidance" (edit.py:1716-1734, iterated at 766-772), ``guidance_steps``
  = 16 times at the timestep of t_edit, with unit v_k (vT rows normalized, edit.py:747):

      x_t <- x_t + guidance_scale * (eps(x_t + alpha * guidance_edit_step * v_k, t) - eps(x_t, t))

  guidance_scale 0.1, guidance_edit_step 1 (the script's --x_space_guidance_scale,
  --x_space_guidance_edit_step, --x_space_guidance_num_step). alpha enters as the public
  code's ``direction`` (+1 / -1, edit.py:752-764): alpha = +-1 is the published edit,
  other values scale the probe. Then the sampler denoises on from the edited x_t;
- t_edit: 1.0 T (the argparser default, define_argparser.py:81, and the README figure);
  the CelebA script loops 1.0 / 0.8 / 0.6 T: ``t_edit`` picks one. The step is the
  sampler step nearest t_edit * T (edit.py:583; ties: the noisier);
- performance boosting: eta = 1 on the steps from the one nearest ``performance_boosting_t``
  * T (0.2, the script; define_argparser.py:231 asserts it) down to x_0, unless that is
  the last step (edit.py:584, 1650-1653); null turns it off. The eta-1 noise is seeded per
  sample (the public code draws it unseeded).

Recorded per row, where the public code records nothing: the basis iterations used and
whether the entry-wise test was met, the sign flip applied and the sign agreement, the
relative change of x_t, the UNet evaluations of the guidance (2 * guidance_steps per edit).

Signs (``sign_alignment``): the public code has no convention (SVD signs). ``reference``
(the default here): each sample's v_k is flipped where its h-space direction J v_k points
against the one of a reference sample (seed ``sign_reference_seed``, decomposed once in
setup, its own signs canonical: largest |entry| of v_k positive), so a direction's label
applies to every sample; ``canonical``: largest |entry| of each v_k positive;
``none``: the SVD's signs, as the public code.

Deviations that stay: the sampler is the study's (diffusers DDIM, ``model.num_inference_steps``,
50 in the CelebA study), not the public code's 100-step custom DDIM (``--for_steps 100``,
linspace timesteps 999..0), so that every method edits the same unedited samples.

``pullback_move`` (:class:`PullbackMove`): the single move of x_t at t_edit along v_k
(no guidance), with its own subspace iteration and alpha scales:

    x_t' = x_t + alpha * v_k                    (alpha_scale=unit; ||v_k|| = 1 over C*H*W)
    x_t' = x_t + alpha * ||x_t|| * v_k          (alpha_scale=x_norm)
    x_t' = x_t + alpha * ||h|| / s_k * v_k      (alpha_scale=h_norm, its default)

h_norm makes alpha the relative change of the h-space features (to first order).

Both: cost is per sample, so it is counted per edit. The decomposition runs inside the
sampler's latent hook at t_edit; a sample is recognized by its x_t there (equal within
a relative 1e-4: batches of other sizes round differently), so all edits of one sample
reuse one decomposition within a run even across batches. Each row reports
``discovery_seconds_per_sample`` (that sample's decomposition time) and
``discovery_share_seconds`` (the part of its ``seconds_per_case`` spent decomposing: this
batch's decomposition time / batch size). Controls carry ``first_edit_timestep``: every
step before it equals the unedited run.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from typing import Any, Iterator

import torch
from torch import Tensor

from attnedit.errors import ConfigError
from attnedit.methods.auto_labels import auto_label
from attnedit.methods.base import EditMethod
from attnedit.methods.labeling import LabeledEdits, case_texts
from attnedit.methods.local_basis import (
    LocalBasis,
    align_signs,
    canonical_reference,
    h_space,
    plain_attention,
    power_method,
    subspace_iteration,
)

ALPHA_SCALES = ("unit", "x_norm", "h_norm")
SIGN_ALIGNMENTS = ("reference", "canonical", "none")
SAME_SAMPLE_RTOL = 1e-4  # x_t of one sample in two batches differs by rounding (~1e-7), of two samples by O(1)


def _as_index_list(directions) -> list[int]:
    if isinstance(directions, int):
        return list(range(directions))
    return [int(d) for d in directions]


def _sync(device: torch.device) -> None:
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


@torch.no_grad()
def x_space_guidance(unet, x: Tensor, timestep: int, probe: Tensor, scale: float, steps: int) -> Tensor:
    """``steps`` times x <- x + scale * (eps(x + probe) - eps(x)) at ``timestep``, both
    predictions in one UNet call per step as edit.py:1725-1733; ``probe`` is per element."""
    t = torch.tensor(int(timestep), device=x.device)
    for _ in range(int(steps)):
        null, edit = unet(torch.cat([x, x + probe]), t).sample.chunk(2)
        x = x + scale * (edit - null)
    return x


class _PerSampleDirections(LabeledEdits, EditMethod):
    """What both pullback methods share: direction indices, alphas, labels, the edit step."""

    def __init__(self, name, directions, alphas, t_edit, labels, labeling, cache_samples) -> None:
        if not 0.0 < float(t_edit) <= 1.0:
            raise ConfigError(f"method.t_edit={t_edit} must be a fraction of T in (0, 1]")
        self.name = name
        self.direction_ids = _as_index_list(directions)
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
        _sync(x_t.device)
        start = time.perf_counter()
        with plain_attention(backend.unet):
            value = self.decompose(backend, x_t)
        _sync(x_t.device)
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


class Pullback(_PerSampleDirections):
    """The public Diffusion-Pullback protocol (module docstring)."""

    def __init__(
        self,
        name: str = "pullback",
        directions: list[int] | int = 3,
        alphas: list[float] = (-1.0, 1.0),
        t_edit: float = 1.0,
        rank: int = 50,
        min_iters: int = 10,
        max_iters: int = 50,
        tol: float = 1e-4,
        seed: int = 0,
        guidance_steps: int = 16,
        guidance_scale: float = 0.1,
        guidance_edit_step: float = 1.0,
        performance_boosting_t: float | None = 0.2,
        sign_alignment: str = "reference",
        sign_reference_seed: int = 2_000_000,
        labels: dict | None = None,
        labeling: dict | None = None,
        cache_samples: int = 4,
    ) -> None:
        super().__init__(name, directions, alphas, t_edit, labels, labeling, cache_samples)
        if sign_alignment not in SIGN_ALIGNMENTS:
            raise ConfigError(f"method.sign_alignment={sign_alignment!r} is not one of {SIGN_ALIGNMENTS}")
        if int(max_iters) < 1 or int(min_iters) < 0 or float(tol) <= 0:
            raise ConfigError(f"method.max_iters={max_iters} must be >= 1, method.min_iters={min_iters} >= 0 "
                              f"and method.tol={tol} > 0")
        if int(rank) < self.needed:
            raise ConfigError(f"method.rank={rank} is too small for direction index {self.needed - 1}; "
                              f"set method.rank>={self.needed}")
        if int(guidance_steps) < 1:
            raise ConfigError(f"method.guidance_steps={guidance_steps} must be >= 1")
        if performance_boosting_t is not None and not 0.0 < float(performance_boosting_t) < 1.0:
            raise ConfigError(f"method.performance_boosting_t={performance_boosting_t} must be in (0, 1) or null (off)")
        self.rank, self.min_iters, self.max_iters = int(rank), int(min_iters), int(max_iters)
        self.tol, self.seed = float(tol), int(seed)
        self.guidance_steps = int(guidance_steps)
        self.guidance_scale = float(guidance_scale)
        self.guidance_edit_step = float(guidance_edit_step)
        self.performance_boosting_t = None if performance_boosting_t is None else float(performance_boosting_t)
        self.sign_alignment = sign_alignment
        self.sign_reference_seed = int(sign_reference_seed)
        self.boost_timestep: int | None = None
        self.reference: LocalBasis | None = None

    def setup(self, backend, cache_dir: str | None = None) -> None:
        super().setup(backend, cache_dir)
        steps = backend.timesteps()
        self.boost_timestep = None
        if self.performance_boosting_t is not None:
            boost = nearest_step(steps, self.performance_boosting_t, backend.num_train_timesteps)
            self.boost_timestep = None if boost == steps[-1] else boost  # edit.py:1650: not when it is the last step
        self.reference, self.discovery_seconds = None, 0.0
        if self.sign_alignment == "reference":  # once per run: the reference sample's own basis
            x_ref = state_at(backend, self.sign_reference_seed, self.timestep)
            _sync(x_ref.device)
            start = time.perf_counter()
            with plain_attention(backend.unet):
                self.reference = canonical_reference(self._power_method(backend, x_ref))
            _sync(x_ref.device)
            self.discovery_seconds = time.perf_counter() - start
        self._label(backend)

    def _power_method(self, backend, x_t: Tensor) -> LocalBasis:
        return power_method(h_space(backend.unet, self.timestep), x_t, self.rank, self.needed,
                            self.min_iters, self.max_iters, self.tol, self.seed)

    def decompose(self, backend, x_t: Tensor) -> tuple[LocalBasis, Tensor | None, Tensor | None]:
        """(basis with this run's signs, flipped per vector, agreement per vector)."""
        found = self._power_method(backend, x_t)
        if self.sign_alignment == "reference":
            return align_signs(found, self.reference.h_directions)
        if self.sign_alignment == "canonical":
            return canonical_reference(found), None, None
        return found, None, None

    def edits(self) -> list[dict[str, Any]]:
        return self._edits({
            "layers": "mid_block",  # h-space: the Jacobian's output
            "position": "x_t",  # where the edit acts
            "alpha_scale": "probe_unit",  # eps(x_t + alpha * guidance_edit_step * v_k), ||v_k|| = 1
            "t_edit": self.timestep,
            "t_edit_fraction": self.t_edit,
            "rank": self.rank,
            "min_iters": self.min_iters,
            "max_iters": self.max_iters,
            "tol": self.tol,
            "guidance_steps": self.guidance_steps,
            "guidance_scale": self.guidance_scale,
            "guidance_edit_step": self.guidance_edit_step,
            "performance_boosting_t": self.boost_timestep,
            "sign_alignment": self.sign_alignment,
        })

    @contextlib.contextmanager
    def control(self, backend, edits) -> Iterator["PullbackControl"]:
        if self.timestep is None:
            raise ConfigError("Pullback.control() needs setup(backend) first")
        yield PullbackControl(self, backend, list(edits))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "protocol": "Diffusion-Pullback public code (enkeejunior1/Diffusion-Pullback@859c012): power method, "
                        "x-space guidance, performance boosting",
            "discovery": "per_sample",
            "discovery_seconds": self.discovery_seconds,  # the sign reference's decomposition, once per run
            "directions": self.direction_ids,
            "labels": {k: self.labels.get(k) for k in self.direction_ids},
            "labeling_seconds": self.labeling_seconds,
            "t_edit_fraction": self.t_edit,
            "t_edit": self.timestep,
            "rank": self.rank,
            "min_iters": self.min_iters,
            "max_iters": self.max_iters,
            "tol": self.tol,
            "seed": self.seed,
            "guidance": {"steps": self.guidance_steps, "scale": self.guidance_scale, "edit_step": self.guidance_edit_step,
                         "unet_evals_per_edit": 2 * self.guidance_steps},
            "performance_boosting_t": self.performance_boosting_t,
            "performance_boosting_timestep": self.boost_timestep,
            "sign_alignment": self.sign_alignment,
            "sign_reference_seed": self.sign_reference_seed if self.sign_alignment == "reference" else None,
            "reference_singular_values": None if self.reference is None else self.reference.singular_values.tolist(),
            "h_space": "unet.mid_block output",
            "sampler": "the study's (model.num_inference_steps DDIM steps); the public code: 100-step custom DDIM",
        }


class PullbackControl:
    """What generate() receives: ``latent_hook`` edits x_t at t_edit by x-space guidance;
    ``eta_at`` switches eta to 1 below the boosting step; afterwards ``row_extras[i]``
    holds the per-case facts of batch element i."""

    def __init__(self, method: Pullback, backend, edits: list[dict[str, Any]]) -> None:
        self.method, self.backend, self.edits = method, backend, edits
        self.row_extras: list[dict[str, Any]] = [{} for _ in edits]
        boost = method.boost_timestep
        self.first_edit_timestep = method.timestep if boost is None else max(method.timestep, boost)

    def eta_at(self, t: int) -> float:
        boost = self.method.boost_timestep
        return 1.0 if boost is not None and t <= boost else float(self.backend.eta)

    def latent_hook(self, t: int, x: Tensor) -> Tensor:
        if len(x) != len(self.edits):
            raise ConfigError(f"pullback: batch of {len(x)} latents but {len(self.edits)} edits")
        if t != self.method.timestep:
            return x
        m = self.method
        found, new_seconds = m._bases(self.backend, x)
        probe = torch.stack([
            float(e["alpha"]) * m.guidance_edit_step * basis.vectors[int(e["direction"])].to(x.device, x.dtype)
            for e, ((basis, _, _), _) in zip(self.edits, found)
        ])
        out = x_space_guidance(self.backend.unet, x, t, probe, m.guidance_scale, m.guidance_steps)
        for i, (edit, ((basis, flipped, agreement), seconds)) in enumerate(zip(self.edits, found)):
            k = int(edit["direction"])
            self.row_extras[i] = {
                "discovery_seconds_per_sample": seconds,
                "discovery_share_seconds": new_seconds / len(x),
                "singular_value": float(basis.singular_values[k]),
                "x_step_ratio": float((out[i] - x[i]).double().norm() / x[i].double().norm().clamp_min(1e-12)),
                "pullback_iterations": basis.iterations,
                "pullback_residual": basis.residual,
                "pullback_converged": basis.converged,
                "sign_flipped": None if flipped is None else bool(flipped[k]),
                "sign_agreement": None if agreement is None else float(agreement[k]),
                "guidance_unet_evals": 2 * m.guidance_steps,
            }
        return out


class PullbackMove(_PerSampleDirections):
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


class PullbackMoveControl:
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

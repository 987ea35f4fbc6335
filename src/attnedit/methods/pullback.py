"""Riemannian pullback editing (Park et al., NeurIPS 2023): per-sample directions.

At one timestep t_edit of the sampler, the directions of a sample are the top right
singular vectors v_k of J = d(mid-block output h)/d(x_t) at that sample's own x_t (see
local_basis.py). ``pullback`` (:class:`Pullback`) is the public code's protocol;
``pullback_move`` (pullback_move.py) the single move of x_t along v_k.
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
- reference: the public code runs the unedited x_t (guidance step 0, edit.py:766) in the
  batch of its guided ones through the boosted sampler (edit.py:773-777), so the unedited
  image its figures show beside an edit is boosted too. ``reference: own_sampler`` (the
  default) scores each edit against the unedited sample under this sampler with the edit's
  own noise (:meth:`Pullback.sampler_control`; the public code draws one unseeded batch of
  noise per step, edit.py:1673-1674, so each image of a figure has other noise);
  ``unedited``: against the study's unedited (eta-0) sample, as every other method. Rows
  record it (``reference_kind``) and hold the other reference's scores (``<metric>_vs_<kind>``).
  On the shipped shapes DDPM (20 steps, edit at 1.0T, seeds 0-1, 2 directions, rank 4) boosting
  alone puts the alpha-0 edit at PSNR 32.2 dB / SSIM 0.855 (crop, 8-bit) from the eta-0 sample
  (identical to the own-sampler one after 8-bit rounding; without an edit, float images,
  measure_baselines.py: 32.3 dB / 0.856, torchmetrics' padded SSIM 0.819), and the alpha +-1 edits score SSIM 0.527
  against it vs 0.605 against their own sampler's (PSNR 20.60 vs 20.57 dB): that is what
  ``unedited`` charges every pullback row.
  With boosting on, alpha = 0 is no identity of the study's unedited sample (the runner
  computes it); the numerical floor is measured against the own-sampler sample.

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
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator

import torch
from torch import Tensor

from attnedit.backends.base import Control
from attnedit.errors import ConfigError
from attnedit.methods.base import REFERENCE_KINDS
from attnedit.methods.local_basis import (
    LocalBasis,
    align_signs,
    canonical_reference,
    h_space,
    plain_attention,
    power_method,
)
from attnedit.methods.per_sample import PerSampleDirections, nearest_step, state_at, sync

SIGN_ALIGNMENTS = ("reference", "canonical", "none")


@torch.no_grad()
def x_space_guidance(unet, x: Tensor, timestep: int, probe: Tensor, scale: float, steps: int) -> Tensor:
    """``steps`` times x <- x + scale * (eps(x + probe) - eps(x)) at ``timestep``, both
    predictions in one UNet call per step as edit.py:1725-1733; ``probe`` is per element."""
    t = torch.tensor(int(timestep), device=x.device)
    for _ in range(int(steps)):
        null, edit = unet(torch.cat([x, x + probe]), t).sample.chunk(2)
        x = x + scale * (edit - null)
    return x


class Pullback(PerSampleDirections):
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
        reference: str = "own_sampler",
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
        if reference not in REFERENCE_KINDS:
            raise ConfigError(f"method.reference={reference!r} is not one of {REFERENCE_KINDS}")
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
        self.reference_kind = reference  # what the runner scores against (methods/base.py)
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
            sync(x_ref.device)
            start = time.perf_counter()
            with plain_attention(backend.unet):
                self.reference = canonical_reference(self._power_method(backend, x_ref))
            sync(x_ref.device)
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

    def is_identity(self, edit: dict[str, Any]) -> bool:
        """alpha = 0 without boosting; with it, even alpha = 0 differs from the study's unedited sample."""
        return float(edit["alpha"]) == 0.0 and edit.get("performance_boosting_t") is None

    def identity_edit(self) -> dict[str, Any] | None:
        """alpha = 0: it changes nothing against the own-sampler unedited sample, which the
        runner measures the numerical floor against, boosting or not."""
        edits = self.edits()
        return {**edits[0], "alpha": 0.0} if edits else None

    def sampler_control(self, backend) -> "BoostedSampler | None":
        """With boosting: the sampler without an edit (eta 1 from the boosting step); else None."""
        if self.timestep is None:
            raise ConfigError("Pullback.sampler_control() needs setup(backend) first")
        return None if self.boost_timestep is None else BoostedSampler(self, backend)

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
            "reference": self.reference_kind if self.boost_timestep is not None else "unedited (no boosting)",
            "reference_singular_values": None if self.reference is None else self.reference.singular_values.tolist(),
            "h_space": "unet.mid_block output",
            "sampler": "the study's (model.num_inference_steps DDIM steps); the public code: 100-step custom DDIM",
        }


class BoostedSampler(Control):
    """Pullback's sampler without an edit: ``eta_at`` is 1 from the boosting step down;
    every step before it is the study's unedited run."""

    def __init__(self, method: Pullback, backend) -> None:
        self.method, self.backend = method, backend
        self.first_edit_timestep = method.boost_timestep

    def eta_at(self, t: int) -> float:
        boost = self.method.boost_timestep
        return 1.0 if boost is not None and t <= boost else float(self.backend.eta)


class PullbackControl(BoostedSampler):
    """What generate() receives: ``latent_hook`` edits x_t at t_edit by x-space guidance;
    ``eta_at`` switches eta to 1 below the boosting step; afterwards ``row_extras[i]``
    holds the per-case facts of batch element i."""

    def __init__(self, method: Pullback, backend, edits: list[dict[str, Any]]) -> None:
        super().__init__(method, backend)
        self.edits = edits
        self.row_extras: list[dict[str, Any]] = [{} for _ in edits]
        boost = method.boost_timestep
        self.first_edit_timestep = method.timestep if boost is None else max(method.timestep, boost)

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

"""Pixel-space DDPM backend: UNet2DModel + DDIM sampling and inversion.

Edits act through hooks/processors installed by a method around :meth:`generate`;
the backend only needs to run the denoising loop and expose its attention layers.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Callable

import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler, UNet2DModel
from diffusers.models.attention_processor import Attention
from torch import Tensor

from attnedit.backends.base import device_name
from attnedit.backends.loading import hash_files, pick_device, pick_dtype, resolve_model_dir, weight_files
from attnedit.data.base import Sample
from attnedit.errors import ConfigError, NonFiniteOutputError

# A latent hook may replace x_t before the UNet sees it at a given timestep (pullback-style edits).
LatentHook = Callable[[int, Tensor], Tensor]
# The DDIM eta of the step at a timestep, for protocols that switch it (pullback's
# "performance boosting": eta 1 below 0.2T; h-space PCA's eta-1 discovery samples).
EtaSchedule = Callable[[int], float]


class DDPMBackend:
    """Load a DDPM by hub id or local directory and sample/invert it with DDIM."""

    def __init__(
        self,
        path: str,
        name: str = "ddpm",
        device: str = "auto",
        dtype: str = "float32",
        num_inference_steps: int = 50,
        eta: float = 0.0,
        build_if_missing: Callable[[str], Any] | None = None,
        random_weights: bool = False,
        edit_layers: list[str] | None = None,
    ) -> None:
        if num_inference_steps < 1:
            raise ConfigError(f"model.num_inference_steps must be >= 1, got {num_inference_steps}")
        self.name = name
        self.path = str(path)
        self.random_weights = random_weights
        # The layers direction methods edit by default on this model (their configs read
        # model.edit_layers); kept here so the config instantiates as one object.
        self.edit_layers = list(edit_layers) if edit_layers is not None else None
        if build_if_missing is not None and not Path(self.path).expanduser().exists():
            build_if_missing(self.path)
        self.model_dir = resolve_model_dir(self.path, f"model '{name}'")
        unet_dir = self.model_dir / "unet" if (self.model_dir / "unet" / "config.json").exists() else self.model_dir
        sched_dir = self.model_dir / "scheduler" if (self.model_dir / "scheduler").is_dir() else self.model_dir
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.unet = UNet2DModel.from_pretrained(unet_dir, torch_dtype=self.dtype).to(self.device).eval().requires_grad_(False)
        self.scheduler = DDIMScheduler.from_pretrained(sched_dir)
        self.num_inference_steps = num_inference_steps
        self.eta = eta
        self._weight_hash = hash_files(weight_files(unet_dir), unet_dir)
        self._inverted: dict[str, Tensor] = {}  # sample id -> x_T, so edits of one image invert it once

    # -- what methods need -------------------------------------------------------------
    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        size = self.unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        return (self.unet.config.in_channels, *size)

    def self_attention_layers(self) -> dict[str, Attention]:
        """Every self-attention layer of the UNet by its diffusers module name."""
        return {
            name: module
            for name, module in self.unet.named_modules()
            if isinstance(module, Attention) and not module.is_cross_attention
        }

    def timesteps(self) -> list[int]:
        self.scheduler.set_timesteps(self.num_inference_steps)
        return [int(t) for t in self.scheduler.timesteps]

    # -- sampling ----------------------------------------------------------------------
    def initial_noise(self, seeds: list[int]) -> Tensor:
        """x_T for each seed, drawn on the CPU so it is the same on every device."""
        return torch.stack([torch.randn(self.image_shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])

    def variance_noise(self, seeds: list[int], timestep: int) -> Tensor:
        """The eta > 0 noise of one step, drawn on the CPU per sample from (seed, timestep):
        a sample gets the same noise in any batch and on any device."""
        return torch.stack([
            torch.randn(self.image_shape, generator=torch.Generator().manual_seed(int(s) * 1_000_003 + int(timestep)))
            for s in seeds
        ]).to(self.device, self.dtype)

    @torch.no_grad()
    def denoise(
        self,
        x_t: Tensor,
        latent_hook: LatentHook | None = None,
        eta_at: EtaSchedule | None = None,
        noise_seeds: list[int] | None = None,
    ) -> Tensor:
        """Run DDIM from x_T to x_0; returns float32 CPU images in [0, 1].

        ``eta_at(t)`` overrides ``eta`` per step; its noise comes from ``noise_seeds`` (one
        per batch element, see :meth:`variance_noise`) when given."""
        x = x_t.to(self.device, self.dtype)
        self.scheduler.set_timesteps(self.num_inference_steps)
        for t in self.scheduler.timesteps:
            if latent_hook is not None:
                x = latent_hook(int(t), x)
            eps = self.unet(x, t).sample
            eta = self.eta if eta_at is None else float(eta_at(int(t)))
            noise = self.variance_noise(noise_seeds, int(t)) if eta > 0 and noise_seeds is not None else None
            x = self.scheduler.step(eps, t, x, eta=eta, variance_noise=noise).prev_sample
        images = (x.float().cpu() / 2 + 0.5).clamp(0, 1)
        if not torch.isfinite(images).all():
            raise NonFiniteOutputError(f"model '{self.name}' produced NaN/inf images; try dtype=float32.")
        return images

    @torch.no_grad()
    def invert(self, images: Tensor) -> Tensor:
        """Deterministic DDIM inversion (diffusers' DDIMInverseScheduler, same steps and
        clipping as the sampler): images in [0, 1] -> x_T that DDIM maps back near them."""
        inverse = DDIMInverseScheduler.from_config(self.scheduler.config)
        inverse.set_timesteps(self.num_inference_steps)
        x = images.to(self.device, self.dtype) * 2 - 1
        for t in inverse.timesteps:
            x = inverse.step(self.unet(x, t).sample, t, x).prev_sample
        return x.float().cpu()

    def noise_for(self, samples: list[Sample]) -> Tensor:
        """Generated samples start from their seed's noise; real images from their inversion."""
        if all(s.image is None for s in samples):
            return self.initial_noise([s.seed for s in samples])
        if any(s.image is None for s in samples):
            raise ConfigError("a batch mixes generated and real samples; use one dataset kind per run")
        todo = [s for s in dict.fromkeys(s.id for s in samples) if s not in self._inverted]
        if todo:
            by_id = {s.id: s for s in samples}
            images = torch.stack([by_id[i].image for i in todo])
            if images.shape[1:] != self.image_shape:
                raise ConfigError(
                    f"images of shape {tuple(images.shape[1:])} do not fit the model input {self.image_shape}; "
                    f"set dataset.size={self.image_shape[-1]}"
                )
            for sid, noise in zip(todo, self.invert(images)):
                if len(self._inverted) >= 256:  # bounded: the runner walks samples in order
                    self._inverted.pop(next(iter(self._inverted)))
                self._inverted[sid] = noise
        return torch.stack([self._inverted[s.id] for s in samples])

    def generate(self, samples: list[Sample], control: Any = None) -> Tensor:
        """One output per sample; ``control`` may carry a latent hook (pullback-style edits)
        and an eta schedule ``eta_at`` (its noise seeded per sample: seed, else crc32 of the id)."""
        eta_at = getattr(control, "eta_at", None)
        seeds = [s.seed if s.seed is not None else zlib.crc32(s.id.encode()) for s in samples] if eta_at else None
        return self.denoise(self.noise_for(samples), getattr(control, "latent_hook", None), eta_at, seeds)

    def reference(self, samples: list[Sample]) -> Tensor:
        """The unedited sample (for real images: their unedited DDIM reconstruction)."""
        return self.generate(samples, None)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "resolved_dir": str(self.model_dir),
            "weights_sha256_16": self._weight_hash,
            "weights_hash_kind": "full",
            "random_weights": self.random_weights,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "device_name": device_name(self.device),
            "settings": {"sampler": f"DDIM eta={self.eta} steps={self.num_inference_steps}"},
        }

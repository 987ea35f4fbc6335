"""Pixel-space DDPM backend: UNet2DModel + DDIM sampling and inversion.

Edits act through hooks/processors installed by a method around :meth:`generate`;
the backend only needs to run the denoising loop and expose its attention layers.

The unedited reference and every edit of a sample share the trajectory up to the
first step the edit can change (the control's ``first_edit_timestep``): :meth:`reference`
keeps each sample's state there (:mod:`attnedit.backends.prefix`) and :meth:`generate`
continues from it, so an edit costs only the steps from that one on, and an edit that
changes nothing reproduces the reference up to the rounding of the steps it reruns.

Noise: each sample has its own CPU ``torch.Generator`` seeded with its seed; it draws
x_T and then, with eta > 0, the DDIM variance noise of every step, as diffusers'
DDIMPipeline does with one generator per batch element (huggingface/diffusers,
src/diffusers/pipelines/ddim/pipeline_ddim.py lines 150 and 162-163 at 58eb52c:
``randn_tensor(..., generator=generator)`` then ``scheduler.step(..., generator=generator)``;
a list of generators draws element i from generator i, src/diffusers/utils/torch_utils.py
line 225). So a batch equals single runs, and an edit gets the same noise as its
reference. Real images (no seed) seed theirs with crc32 of the sample id. A control's
``eta_at(t)`` overrides eta per step; a step at eta 0 draws nothing, so the generators
of a run at eta 0 above the window are where an eta 0 run left them.

Clipping: ``clip_sample`` null (the default) samples as the checkpoint's scheduler config
says, as diffusers' DDIMPipeline does (it rebuilds its scheduler with
``DDIMScheduler.from_config(scheduler.config)``, pipeline_ddim.py line 58 at 58eb52c, and
steps it with that config, line 162); google's DDPM checkpoints say ``clip_sample: true``,
so every step clips the predicted x0 to [-1, 1] (scheduling_ddim.py line 473). The
baselines' own samplers never clip: Haas et al. switch it off (renhaa/semantic-diffusion
@91f0a15, semanticdiffusion.py:334-338, and their ``reverse_step`` :368-397 has no clip)
and Diffusion-Pullback's default ``YHCustomScheduler.step`` has none (enkeejunior1/
Diffusion-Pullback@859c012, src/utils/utils.py:1197-1241; ``--use_yh_custom_scheduler``
defaults to True, define_argparser.py:43). true/false force it for sampling and
inversion; rows record the resolved value (``clip_sample``) and the pipeline's
(``clip_sample_pipeline``), and table titles say when they differ. The shipped shapes DDPM
needs the clipping: unclipped, half its pixels saturate and its samples lie PSNR 10.0 dB /
SSIM 0.46 from the clipped ones (experiments/celebahq_compare/sampler_options.json).

TF32: CUDA matmuls and cuDNN convolutions run in full float32 unless
``allow_tf32=True`` (on an H200, TF32 convolutions put an alpha = 0 edit 66.6 dB from the
unedited image instead of 134.7 dB; reference/gpu-measurements.md). The flags are set
around every UNet loop and restored after it.
"""

from __future__ import annotations

import contextlib
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler, UNet2DModel
from diffusers.models.attention_processor import Attention
from torch import Tensor

from attnedit.backends.base import Control, device_name
from attnedit.backends.layers import self_attention_layers
from attnedit.backends.loading import hash_files, pick_device, pick_dtype, resolve_model_dir, weight_files
from attnedit.backends.prefix import PrefixStore, State
from attnedit.data.base import Sample
from attnedit.errors import ConfigError, NonFiniteOutputError

# A latent hook may replace x_t before the UNet sees it at a given timestep (pullback-style edits).
LatentHook = Callable[[int, Tensor], Tensor]
# The DDIM eta of the step at a timestep, for protocols that switch it (pullback's
# "performance boosting": eta 1 below 0.2T; h-space PCA's eta-1 discovery samples).
EtaSchedule = Callable[[int], float]


def component_dirs(model_dir: Path) -> tuple[Path, Path]:
    """(the UNet's folder, the scheduler's folder) of a pipeline folder (unet/, scheduler/;
    with or without model_index.json) or of a bare UNet folder holding both configs."""
    unet_dir = model_dir / "unet" if (model_dir / "unet" / "config.json").exists() else model_dir
    sched_dir = model_dir / "scheduler" if (model_dir / "scheduler").is_dir() else model_dir
    return unet_dir, sched_dir


@contextlib.contextmanager
def tf32(allowed: bool) -> Iterator[None]:
    """CUDA matmuls and cuDNN convolutions in TF32 only if ``allowed``; restored on exit.

    torch >= 2.9 has per-backend ``fp32_precision`` settings and raises when the legacy
    ``allow_tf32`` flags are read after a mixed use of both, so the new ones are used
    where they exist ("ieee" = full float32), the legacy flags otherwise.
    """
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision") and hasattr(cudnn, "conv"):
        saved = (matmul.fp32_precision, cudnn.conv.fp32_precision)
        matmul.fp32_precision = cudnn.conv.fp32_precision = "tf32" if allowed else "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision, cudnn.conv.fp32_precision = saved
    else:
        saved = (matmul.allow_tf32, cudnn.allow_tf32)
        matmul.allow_tf32 = cudnn.allow_tf32 = bool(allowed)
        try:
            yield
        finally:
            matmul.allow_tf32, cudnn.allow_tf32 = saved


class DDPMBackend:
    """Load a DDPM by hub id or local directory and sample/invert it with DDIM."""

    # The reference of a case is the unedited generation (or reconstruction) of its sample,
    # so the runner takes an identity edit's image from it instead of recomputing it.
    reference_is_unedited = True

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
        allow_tf32: bool = False,
        share_prefix: bool = True,
        prefix_memory_mb: int = 1024,
        hub_id: str | None = None,
        clip_sample: bool | None = None,
    ) -> None:
        if clip_sample is not None and not isinstance(clip_sample, bool):
            raise ConfigError(f"model.clip_sample must be null (the checkpoint's scheduler config, as diffusers' "
                              f"DDIMPipeline), true or false, got {clip_sample!r}")
        if num_inference_steps < 1:
            raise ConfigError(f"model.num_inference_steps must be >= 1, got {num_inference_steps}")
        if eta < 0:
            raise ConfigError(f"model.eta must be >= 0 (0: deterministic DDIM), got {eta}")
        self.name = name
        self.path = str(path)
        self.random_weights = random_weights
        # The layers direction methods edit by default on this model (their configs read
        # model.edit_layers); kept here so the config instantiates as one object.
        self.edit_layers = list(edit_layers) if edit_layers is not None else None
        if build_if_missing is not None and not Path(self.path).expanduser().exists():
            build_if_missing(self.path)
        self.model_dir = resolve_model_dir(self.path, f"model '{name}'", hub_id=hub_id)
        unet_dir, sched_dir = component_dirs(self.model_dir)
        self.device = pick_device(device, "model.device")
        self.dtype = pick_dtype(dtype, self.device)
        self.unet = UNet2DModel.from_pretrained(unet_dir, torch_dtype=self.dtype).to(self.device).eval().requires_grad_(False)
        self.scheduler = DDIMScheduler.from_pretrained(sched_dir)
        # what DDIMPipeline would do with this checkpoint, then the run's choice
        self.clip_sample_pipeline = bool(self.scheduler.config.clip_sample)
        if clip_sample is not None and clip_sample != self.clip_sample_pipeline:
            self.scheduler = DDIMScheduler.from_config(self.scheduler.config, clip_sample=clip_sample)
        self.clip_sample = bool(self.scheduler.config.clip_sample)
        self.num_inference_steps = num_inference_steps
        self.eta = float(eta)
        self.allow_tf32 = bool(allow_tf32)
        self.share_prefix = bool(share_prefix)
        self._weight_hash = hash_files(weight_files(unet_dir), unet_dir)
        self._inverted: dict[str, Tensor] = {}  # sample id -> x_T, so edits of one image invert it once
        self.prefix = PrefixStore(max_bytes=int(prefix_memory_mb) << 20)

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
        return self_attention_layers(self.unet)

    def timesteps(self) -> list[int]:
        self.scheduler.set_timesteps(self.num_inference_steps)
        return [int(t) for t in self.scheduler.timesteps]

    def numerics(self) -> contextlib.AbstractContextManager:
        """The float settings every UNet evaluation of this backend runs under (TF32)."""
        return tf32(self.allow_tf32)

    # -- sampling ----------------------------------------------------------------------
    def _seeded_noise(self, seed: int) -> tuple[Tensor, torch.Generator]:
        generator = torch.Generator().manual_seed(int(seed))
        return torch.randn(self.image_shape, generator=generator), generator

    def initial_noise(self, seeds: list[int]) -> Tensor:
        """x_T for each seed, drawn on the CPU so it is the same on every device."""
        return torch.stack([self._seeded_noise(s)[0] for s in seeds])

    def seeded_start(self, seeds: list[int]) -> tuple[Tensor, list[torch.Generator]]:
        """x_T for each seed and its generator past that draw (the eta > 0 noise to come)."""
        noise, generators = zip(*(self._seeded_noise(s) for s in seeds))
        return torch.stack(noise), list(generators)

    def _fresh_generator(self, sample: Sample) -> torch.Generator:
        """The generator a sample's run holds after x_T, before any eta > 0 step."""
        if sample.image is None:
            return self._seeded_noise(sample.seed)[1]
        return torch.Generator().manual_seed(self._generator_seed(sample))

    def _loop(
        self,
        x: Tensor,
        generators: list[torch.Generator] | None,
        start: int | None = None,
        until: int | None = None,
        latent_hook: LatentHook | None = None,
        keys: list[str] | None = None,
        eta_at: EtaSchedule | None = None,
    ) -> Tensor:
        """DDIM over the steps t <= ``start`` (all if None), stopping before the first step
        t <= ``until``. With ``keys`` (one per batch element), each element's state is
        stored before every step the prefix store wants."""
        x = x.to(self.device, self.dtype)
        self.scheduler.set_timesteps(self.num_inference_steps)
        for t in self.scheduler.timesteps:
            step = int(t)
            if start is not None and step > start:
                continue
            if until is not None and step <= until:
                break
            if keys is not None and self.prefix.wants(step):
                for i, key in enumerate(keys):
                    rng = generators[i].get_state() if generators is not None else None
                    self.prefix.put(key, step, State(x[i].detach().to("cpu", copy=True), rng))
            if latent_hook is not None:
                x = latent_hook(step, x)
            eps = self.unet(x, t).sample
            eta = self.eta if eta_at is None else float(eta_at(step))
            x = self.scheduler.step(eps, t, x, eta=eta, generator=generators if eta > 0 else None).prev_sample
        return x

    def _images(self, x: Tensor) -> Tensor:
        images = (x.float().cpu() / 2 + 0.5).clamp(0, 1)
        if not torch.isfinite(images).all():
            raise NonFiniteOutputError(f"model '{self.name}' produced NaN/inf images; try dtype=float32.")
        return images

    @torch.no_grad()
    def denoise(
        self,
        x_t: Tensor,
        latent_hook: LatentHook | None = None,
        generators: list[torch.Generator] | None = None,
        eta_at: EtaSchedule | None = None,
    ) -> Tensor:
        """Run DDIM from x_T to x_0; returns float32 CPU images in [0, 1]. With eta > 0
        (``eta``, or ``eta_at(t)`` per step), ``generators`` (one per element, e.g. from
        :meth:`seeded_start`) draw the variance noise (None: torch's global RNG)."""
        with self.numerics():
            return self._images(self._loop(x_t, generators, latent_hook=latent_hook, eta_at=eta_at))

    @torch.no_grad()
    def invert(self, images: Tensor) -> Tensor:
        """Deterministic DDIM inversion (diffusers' DDIMInverseScheduler, same steps and
        clipping as the sampler): images in [0, 1] -> x_T that DDIM maps back near them."""
        inverse = DDIMInverseScheduler.from_config(self.scheduler.config)
        inverse.set_timesteps(self.num_inference_steps)
        x = images.to(self.device, self.dtype) * 2 - 1
        with self.numerics():
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

    def _generator_seed(self, sample: Sample) -> int:
        return int(sample.seed) if sample.seed is not None else zlib.crc32(sample.id.encode())

    def _start(self, samples: list[Sample], rng: bool | None = None) -> tuple[Tensor, list[torch.Generator] | None]:
        """x_T of each sample and, if ``rng`` (default: eta > 0), its generator (past the draw of x_T)."""
        rng = self.eta > 0 if rng is None else rng
        if all(s.image is None for s in samples):
            x_T, generators = self.seeded_start([s.seed for s in samples])
            return x_T, (generators if rng else None)
        x_T = self.noise_for(samples)
        if not rng:
            return x_T, None
        return x_T, [torch.Generator().manual_seed(self._generator_seed(s)) for s in samples]

    @staticmethod
    def _key(sample: Sample) -> str:
        return f"seed:{sample.seed}" if sample.image is None else f"image:{sample.id}"

    def _states_at(
        self, samples: list[Sample], start: int, rng: bool = False
    ) -> tuple[Tensor, list[torch.Generator] | None]:
        """Each sample's unedited state entering step ``start``: stored by reference(), or
        computed now (once per sample) from x_T. ``rng``: also a generator per element
        (a state stored by an eta 0 run gets the one its sample holds after x_T)."""
        keys = [self._key(s) for s in samples]
        states = {k: self.prefix.get(k, start) for k in keys}
        missing = {k: s for k, s in zip(keys, samples) if states[k] is None}
        if missing:
            x, generators = self._start(list(missing.values()))
            x = self._loop(x, generators, until=start, keys=list(missing))
            for i, key in enumerate(missing):  # the state entering ``start`` itself
                state = generators[i].get_state() if generators is not None else None
                states[key] = State(x[i].detach().to("cpu", copy=True), state)
                self.prefix.put(key, start, states[key])
        generators = None
        if rng:  # one generator per batch element, also for two edits of one sample
            generators = [torch.Generator().set_state(states[k].rng) if states[k].rng is not None
                          else self._fresh_generator(s) for k, s in zip(keys, samples)]
        return torch.stack([states[k].x for k in keys]), generators

    def _start_step(self, control: Control) -> int | None:
        """The DDIM step an edit starts from: the largest step <= the control's
        ``first_edit_timestep`` (None: the edit runs from x_T)."""
        first = control.first_edit_timestep
        if first is None or not self.share_prefix:
            return None
        steps = [t for t in self.timesteps() if t <= int(first)]
        return max(steps) if steps else None

    @torch.no_grad()
    def generate(self, samples: list[Sample], control: Control | None = None) -> Tensor:
        """One output per sample; ``control`` may carry a latent hook (pullback-style edits),
        an eta schedule ``eta_at`` and ``first_edit_timestep`` (the edit starts from the
        stored unedited state there)."""
        edited = control is not None
        control = control if edited else Control()
        start = self._start_step(control)
        eta_at = control.eta_at
        rng = self.eta > 0 or eta_at is not None
        if edited:
            self.prefix.settle(start)
        with self.numerics():
            if start is None:
                x, generators = self._start(samples, rng)
            else:
                x, generators = self._states_at(samples, start, rng)
            return self._images(self._loop(x, generators, start=start, eta_at=eta_at,
                                           latent_hook=control.latent_hook))

    @torch.no_grad()
    def reference(self, samples: list[Sample]) -> Tensor:
        """The unedited sample (for real images: their unedited DDIM reconstruction); keeps
        each sample's states that edits will start from."""
        with self.numerics():
            x, generators = self._start(samples)
            keys = [self._key(s) for s in samples] if self.share_prefix else None
            return self._images(self._loop(x, generators, keys=keys))

    def row_columns(self) -> dict[str, Any]:
        """Sampler facts every row records: the resolved clipping and DDIMPipeline's."""
        return {"clip_sample": self.clip_sample, "clip_sample_pipeline": self.clip_sample_pipeline}

    def _sampler(self) -> str:
        # unchanged text where the clipping is the checkpoint's, so caches keyed by it stay valid
        forced = "" if self.clip_sample == self.clip_sample_pipeline else f" clip_sample={self.clip_sample}"
        return f"DDIM eta={self.eta} steps={self.num_inference_steps}{forced}"

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
            "settings": {
                "sampler": self._sampler(),
                "clip_sample": self.clip_sample,
                "clip_sample_pipeline": self.clip_sample_pipeline,
                "noise": "per-sample CPU torch.Generator(seed): x_T, then the DDIM variance noise",
                "allow_tf32": self.allow_tf32,
                "share_prefix": self.share_prefix,
            },
        }

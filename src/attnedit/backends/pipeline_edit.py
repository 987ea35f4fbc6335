"""Instruction-based image editing through a diffusers pipeline with an MM-DiT
transformer: what the Qwen-Image-Edit and FLUX.1 Kontext backends share (loading by hub
id or local directory with clear offline errors, dtype and offload, per-sample seeded
generators, prompts from a sample field, resizing outputs back, provenance).

Attention edits (GRAG / DCAG) are installed on :attr:`transformer` by the method's
context manager around :meth:`generate`; the backend only runs the pipeline.
The pipelines work at about one megapixel whatever the source size; :meth:`generate`
resizes outputs back to the source size (``resize``: bicubic with antialiasing, then
clamped to [0, 1]); :meth:`generate_native` returns them at the pipeline's size, which
PIE-Bench runs save as the official scripts do (attnedit.run.saved_edits).

Each (image, prompt) is conditioned as the pipeline's documented single-image call
conditions it (``pipe(image=<one PIL image>, prompt=<str>, ...)``): the text encoders run
once per (image, prompt) and their outputs go to the pipeline as its precomputed prompt
embeddings, padded across a batch as the pipeline pads a list of prompts. A batch of
grid points of one image passes that one PIL image; a batch of several images passes
the per-sample list, which both pipelines resize exactly as a single image. With
``cache_conditions`` (default) the text-encoder outputs and the condition image's VAE
latents are kept while the cases of one image follow each other (the runner orders them
sample-major) and dropped when the image changes; the numbers do not change.
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from attnedit.backends.base import Control, device_name
from attnedit.backends.loading import WEIGHT_SUFFIXES, download_command, hash_files, pick_device, pick_dtype
from attnedit.data.base import Sample
from attnedit.errors import ConfigError, DataError, NonFiniteOutputError, WeightsNotFoundError

FULL_HASH_LIMIT = 2 << 30  # bytes; larger transformers get a header fingerprint (hashing 40 GB per run is too slow)
RESIZE_MODES = ("bicubic", "bilinear", "area")


class ReusedConditionLatents:
    """Mixin for a diffusers editing pipeline (QwenImageEditPipeline, FluxKontextPipeline)
    that reuses the condition image's VAE latents while ``reuse_condition_latents`` is on.

    Why a subclass: both pipelines encode the condition image inside ``__call__`` through
    ``_encode_vae_image(image, generator)`` (diffusers 0.42.1 pipeline_qwenimage_edit.py
    L406-427, pipeline_flux_kontext.py L599-611), and QwenImageEditPipeline cannot be handed
    latents instead of an image (its size logic reads a PIL image's ``.size``, L623, and it
    sets the text encoder's image only for image inputs, L661-663). Overriding that one
    method keeps every other step of the official call; no live object is patched.

    The memo is keyed by the preprocessed image tensor itself (the pipeline's own resize and
    normalisation, compared with torch.equal): a hit is the same input by construction. It
    holds the images of the latest call only, so it is freed when the image changes. Rows
    are encoded one at a time, as the pipelines do for a list of generators (the backend
    always passes one), in ``argmax`` mode where the generator is unused.
    """

    reuse_condition_latents = False

    def _encode_vae_image(self, image: Tensor, generator) -> Tensor:
        if not self.reuse_condition_latents:
            self._condition_memo = []
            return super()._encode_vae_image(image, generator)
        generators = generator if isinstance(generator, list) else [generator] * image.shape[0]
        previous, kept, latents = getattr(self, "_condition_memo", []), [], []
        for row, gen in zip(image.split(1), generators):
            hit = next((lat for seen, lat in kept + previous if seen.shape == row.shape and torch.equal(seen, row)),
                       None)
            if hit is None:
                hit = super()._encode_vae_image(row, [gen] if isinstance(generator, list) else gen)
            if not any(lat is hit for _, lat in kept):
                kept.append((row, hit))
            latents.append(hit)
        self._condition_memo = kept
        return torch.cat(latents)


class PipelineEditBackend(abc.ABC):
    """Load an editing pipeline (hub id or local diffusers directory) and edit images.

    Subclasses name the pipeline class, the model's display name and hub id, the
    pipeline's own arguments (:meth:`pipeline_kwargs`, :meth:`settings`) and how one
    (image, prompt) is text-encoded and batched (:meth:`encode_text`, :meth:`text_kwargs`)."""

    pipeline_class = ""  # the diffusers pipeline class name (recorded in describe())
    pipeline_type: type = object  # that class with ReusedConditionLatents mixed in
    display_name = ""
    hub_id = ""

    def __init__(
        self,
        path: str,
        device: str = "auto",
        dtype: str = "auto",
        cpu_offload: bool = False,
        num_inference_steps: int = 28,
        seed: int = 42,
        prompt_field: str = "editing_instruction",
        name: str = "",
        local_files_only: bool | None = None,
        resize: str = "bicubic",
        cache_conditions: bool = True,
    ) -> None:
        if num_inference_steps < 1:
            raise ConfigError(f"model.num_inference_steps must be >= 1, got {num_inference_steps}")
        if resize not in RESIZE_MODES:
            raise ConfigError(f"model.resize={resize!r} is not one of {RESIZE_MODES}")
        self.name, self.path = name, str(path)
        self.num_inference_steps = int(num_inference_steps)
        self.seed = int(seed)
        self.prompt_field = prompt_field
        self.resize = resize
        self.cpu_offload = bool(cpu_offload)
        self.cache_conditions = bool(cache_conditions)
        self._conditions: dict[tuple, dict[str, Any]] = {}  # text-encoder outputs of the current image(s)
        self.device = pick_device(device, "model.device")
        if self.cpu_offload and self.device.type != "cuda":
            raise ConfigError(f"model.cpu_offload=true offloads to the CPU between GPU uses; device is {self.device}")
        self.dtype = pick_dtype(dtype, self.device, gpu_default="bfloat16")
        self.pipe = self._load_pipeline(local_files_only)
        if self.cpu_offload:
            self.pipe.enable_model_cpu_offload(device=self.device)
        else:
            self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self.model_dir = _pipeline_dir(self.pipe, self.path)
        self._fingerprint = _transformer_fingerprint(self.model_dir) if self.model_dir else None

    @property
    def transformer(self):
        """The MM-DiT transformer that attention methods act on."""
        return self.pipe.transformer

    def pipeline_kwargs(self, sources: Tensor) -> dict[str, Any]:
        """The pipeline's own arguments for one batch of (B, 3, H, W) sources."""
        return {}

    def settings(self) -> dict[str, Any]:
        """Those arguments as recorded in the run's provenance."""
        return {}

    @abc.abstractmethod
    def encode_text(self, image: Image.Image, prompt: str) -> dict[str, Any]:
        """What the pipeline's text encoder(s) give for one official call on ``image``
        and ``prompt`` (both CFG branches where there are two)."""

    @abc.abstractmethod
    def text_kwargs(self, conditions: list[dict[str, Any]]) -> dict[str, Any]:
        """Per-sample :meth:`encode_text` outputs as the pipeline's precomputed-embedding
        arguments for one batch."""

    # -- editing -------------------------------------------------------------------------
    def generate(self, samples: list[Sample], control: Control | None = None) -> Tensor:
        """Edit each sample's image by its instruction: (B, 3, H, W) float32 CPU in [0, 1],
        :meth:`generate_native` resized to the source size (``resize``)."""
        edited = self.generate_native(samples, control)
        size = tuple(samples[0].image.shape[-2:])
        if edited.shape[-2:] != size:
            mode = self.resize
            extra = {"antialias": True, "align_corners": False} if mode != "area" else {}
            edited = F.interpolate(edited, size=size, mode=mode, **extra).clamp(0, 1)
        return edited

    @torch.no_grad()
    def generate_native(self, samples: list[Sample], control: Control | None = None) -> Tensor:
        """The pipeline's outputs at its own size (about 1 MP: 1024 x 1024 for a square
        source), float32 CPU in [0, 1]: what the official PIE-Bench scripts save.

        ``control`` is whatever the method's context manager yielded; guidance is already
        installed on :attr:`transformer`, so it needs nothing more here. Each sample gets
        its own CPU generator seeded with ``seed``, so a batch equals single runs.
        """
        sources = self.reference(samples)
        images = [_to_pil(img) for img in sources]
        prompts = [self._prompt(s) for s in samples]
        digests = [hashlib.sha256(image.tobytes()).hexdigest() for image in images]
        self.pipe.reuse_condition_latents = self.cache_conditions
        output = self.pipe(
            image=images[0] if len(set(digests)) == 1 else images,
            num_inference_steps=self.num_inference_steps,
            generator=[torch.Generator("cpu").manual_seed(self.seed) for _ in samples],
            output_type="pt",
            **self.pipeline_kwargs(sources),
            **self.text_kwargs(self._text_conditions(images, prompts, digests)),
        ).images
        edited = output.float().cpu()
        if not torch.isfinite(edited).all():
            raise NonFiniteOutputError(f"model '{self.name}' produced NaN/inf images (dtype {self.dtype}); "
                                       "try dtype=float32 or bfloat16")
        return edited

    def reference(self, samples: list[Sample]) -> Tensor:
        """The source images, (B, 3, H, W) float32 CPU in [0, 1]."""
        missing = [s.id for s in samples if s.image is None]
        if missing:
            raise DataError(f"model '{self.name}' edits real images; samples {missing} have no image")
        sizes = {tuple(s.image.shape) for s in samples}
        if len(sizes) != 1:
            raise ConfigError(f"model '{self.name}': one batch must hold images of one size, got {sorted(sizes)} "
                              "(the pipeline resizes a batch to its first image's aspect ratio); use batch_size=1")
        return torch.stack([s.image.float().cpu() for s in samples])

    def _text_conditions(self, images: list[Image.Image], prompts: list[str], digests: list[str]) -> list[dict]:
        """:meth:`encode_text` once per distinct (image, prompt) of the batch; with
        ``cache_conditions`` also once across the consecutive calls of one image."""
        settings = repr(sorted(self.settings().items()))
        keys = [(digest, image.size, prompt, settings) for digest, image, prompt in zip(digests, images, prompts)]
        cached = self._conditions if self.cache_conditions else {}
        current: dict[tuple, dict[str, Any]] = {}
        for key, image, prompt in zip(keys, images, prompts):
            if key not in current:
                current[key] = cached[key] if key in cached else self.encode_text(image, prompt)
        self._conditions = current if self.cache_conditions else {}  # this call's images only
        return [current[key] for key in keys]

    def _prompt(self, sample: Sample) -> str:
        if self.prompt_field not in sample.fields:
            raise DataError(f"sample '{sample.id}' has no field '{self.prompt_field}' "
                            f"(model.prompt_field); it has {sorted(sample.fields)}")
        return str(sample.fields[self.prompt_field])

    def describe(self) -> dict[str, Any]:
        fingerprint = self._fingerprint or {}
        return {
            "name": self.name,
            "path": self.path,
            "resolved_dir": str(self.model_dir) if self.model_dir else None,
            "weights_sha256_16": fingerprint.get("weights_sha256_16"),
            "weights_hash_kind": fingerprint.get("weights_hash_kind"),
            "random_weights": False,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "device_name": device_name(self.device),
            "settings": {
                "revision": _hub_revision(self.model_dir),
                "pipeline": self.pipeline_class,
                "cpu_offload": self.cpu_offload,
                "cache_conditions": self.cache_conditions,  # reuse text-encoder / VAE outputs; same numbers
                "num_inference_steps": self.num_inference_steps,
                **self.settings(),
                "seed": self.seed,
                "prompt_field": self.prompt_field,
                "resize": self.resize,
                "transformer_config_sha256_16": _config_hash(self.transformer.config),
            },
        }

    # -- loading ------------------------------------------------------------------------
    def _missing(self, why: str) -> WeightsNotFoundError:
        from huggingface_hub.constants import HF_HUB_CACHE

        path = self.path
        is_hub_id = path.count("/") == 1 and not path.startswith((".", "/", "~"))
        hub_id = path if is_hub_id else self.hub_id
        # A local folder (existing or not) is where the download goes; a hub id needs a folder.
        local_dir = "<dir>" if is_hub_id else path
        return WeightsNotFoundError(
            f"{self.display_name} weights '{path}' could not be loaded: {why}. Looked in the local directory / the "
            f"Hugging Face cache ({HF_HUB_CACHE}). On a machine with internet run "
            f"`{download_command(hub_id, local_dir)}` and pass model.path={local_dir} "
            "(a directory in diffusers layout with model_index.json)."
        )

    def _load_pipeline(self, local_files_only: bool | None):
        pipeline = self.pipeline_type
        path, local = self.path, Path(self.path).expanduser()
        if local.is_dir():
            if not (local / "model_index.json").is_file():
                raise self._missing(f"directory {local} has no model_index.json (not a complete diffusers pipeline)")
            return pipeline.from_pretrained(local, dtype=self.dtype)
        if path.startswith((".", "/", "~")) or path.count("/") != 1:
            raise self._missing("it is neither an existing directory nor a hub id of the form owner/name")
        if local_files_only is None:
            local_files_only = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        try:
            return pipeline.from_pretrained(path, dtype=self.dtype, local_files_only=local_files_only)
        except OSError as err:  # offline and not cached, unreachable hub, gated or unknown repo
            raise self._missing(f"{type(err).__name__}: {str(err).splitlines()[0][:200]}") from err


def _to_pil(image: Tensor) -> Image.Image:
    # Sources are 8-bit files read as x/255, so rounding back to uint8 is lossless for them.
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array))


def _pipeline_dir(pipe, path: str) -> Path | None:
    """The local directory the transformer was read from (the cache snapshot for hub ids)."""
    for candidate in (Path(path).expanduser(), Path(str(pipe.transformer.config.get("_name_or_path", ""))).parent):
        if (candidate / "model_index.json").is_file():
            return candidate
    return None


def _hub_revision(model_dir: Path | None) -> str | None:
    # Hugging Face cache snapshots live in .../snapshots/<commit hash>/
    return model_dir.name if model_dir is not None and model_dir.parent.name == "snapshots" else None


def _config_hash(config) -> str:
    public = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    return hashlib.sha256(json.dumps(public, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _transformer_fingerprint(model_dir: Path) -> dict[str, str]:
    """sha256 of the transformer weight files; above FULL_HASH_LIMIT, of their names,
    sizes and safetensors headers (tensor names, dtypes, shapes, offsets) instead."""
    folder = model_dir / "transformer"
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        return {}
    if sum(f.stat().st_size for f in files) <= FULL_HASH_LIMIT:
        return {"weights_sha256_16": hash_files(files, folder), "weights_hash_kind": "full"}
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(folder)}:{file.stat().st_size}".encode())
        if file.suffix == ".safetensors":
            with open(file, "rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                digest.update(handle.read(length))
    return {"weights_sha256_16": digest.hexdigest()[:16], "weights_hash_kind": "names+sizes+safetensors headers"}

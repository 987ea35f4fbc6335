"""The instruction-editing backends (Qwen-Image-Edit, FLUX.1 Kontext) on their tiny
pipelines (qwen_tiny, flux_tiny), loaded through ``path`` like the real weights; diffusers'
stock pipeline class of each; source images with instructions; and what the pipelines'
encoders and transformer receive in one call (pipeline_recorder)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import FluxKontextPipeline, QwenImageEditPipeline
from PIL import Image

import flux_tiny
import qwen_tiny
from attnedit.backends.flux_kontext import FluxKontextBackend
from attnedit.backends.qwen_edit import QwenImageEditBackend
from attnedit.data.base import Sample
from pipeline_recorder import Stop, recording

TINY = {"qwen": qwen_tiny, "flux": flux_tiny}
PIPELINES = {"qwen": QwenImageEditPipeline, "flux": FluxKontextPipeline}

# The tiny Kontext VAE has no downsampling to spare: the pipeline's 1 MP default working size
# would put a 512 x 512 attention in its mid block. Backend and documented call both work at 32 x 32.
FLUX_SMALL = dict(max_area=32 * 32, auto_resize=False, max_sequence_length=16)


def make_backend(arch: str, path):
    if arch == "qwen":
        return QwenImageEditBackend(path=str(path), device="cpu", num_inference_steps=1)
    return FluxKontextBackend(str(path), device="cpu", num_inference_steps=2, **FLUX_SMALL)


def source_sample(seed: int, instruction: str = "make it red", size=(32, 32), sid: str | None = None) -> Sample:
    """A source image of 8-bit values (like a decoded JPEG) and its editing instruction."""
    pixels = torch.randint(0, 256, (3, *size), generator=torch.Generator().manual_seed(seed)) / 255.0
    return Sample(id=sid or f"k{seed}", image=pixels, fields={"editing_instruction": instruction})


def pil(s: Sample) -> Image.Image:
    """The source as the official scripts and the model cards hold it: an 8-bit RGB PIL image."""
    return Image.fromarray((s.image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy().astype(np.uint8))


def parts(pipe) -> dict:
    """The modules whose inputs are compared: text encoder(s), VAE encoder, transformer."""
    if isinstance(pipe, FluxKontextPipeline):
        encoders = {"clip": pipe.text_encoder, "t5": pipe.text_encoder_2}
    else:
        encoders = {"text": pipe.text_encoder}
    return {**encoders, "vae": pipe.vae.encoder, "transformer": pipe.transformer}


def until_transformer(pipe, call) -> dict:
    """What :func:`parts` of ``pipe`` receive while ``call()`` runs, up to the first transformer call."""
    with recording(parts(pipe), stop_at="transformer") as seen, pytest.raises(Stop):
        call()
    return seen


def backend_call(backend, samples) -> dict:
    return until_transformer(backend.pipe, lambda: backend.generate(samples))

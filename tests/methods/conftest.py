"""Backends the method tests of several files share."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from attnedit.backends.ddpm import DDPMBackend
from attnedit.backends.tiny import SCHEDULER
from ddpm_models import small_unet



@pytest.fixture(scope="module")
def small_backend(tmp_path_factory):
    """A DDPMBackend on small_unet() in float64: 4 steps (750, 500, 250, 0)."""
    folder = tmp_path_factory.mktemp("small_ddpm")
    small_unet().float().save_pretrained(folder)
    DDPMScheduler(**SCHEDULER).save_pretrained(folder)
    backend = DDPMBackend(str(folder), device="cpu", num_inference_steps=4)
    backend.unet, backend.dtype = backend.unet.double(), torch.float64
    return backend


@pytest.fixture(scope="module")
def short_backend(tiny_ddpm_dir):
    return DDPMBackend(str(tiny_ddpm_dir), device="cpu", num_inference_steps=3)  # timesteps 666, 333, 0

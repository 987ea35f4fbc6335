"""The instruction-editing backend of each test module's ``ARCH`` ("qwen" or "flux") on its
tiny pipeline, saved with save_pretrained and loaded back through ``path``, and diffusers'
stock pipeline on the same weights."""

from __future__ import annotations

import pytest
import torch

from edit_backends import PIPELINES, TINY, make_backend



@pytest.fixture(scope="module")
def model_dir(request, tmp_path_factory):
    """The module's ``ARCH`` tiny pipeline, saved in diffusers layout."""
    arch = request.module.ARCH
    return TINY[arch].save_tiny_pipeline(tmp_path_factory.mktemp(f"tiny_{arch}") / "pipe")


@pytest.fixture(scope="module")
def backend(request, model_dir):
    return make_backend(request.module.ARCH, model_dir)


@pytest.fixture(scope="module")
def stock_pipeline(request, model_dir):
    """diffusers' own pipeline class on the same weights."""
    pipe = PIPELINES[request.module.ARCH].from_pretrained(model_dir, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe

"""Shared test set-up: offline, W&B disabled, few threads, tiny models built once.

tests/support/ is on sys.path: test-only modules (tiny model builders, recorders, the
zygote, harness.py's shared names: tests import them from there) and the runs that tests of several
folders read, registered below as plugins so each is computed once per session."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

SUPPORT = Path(__file__).resolve().parent / "support"
sys.path.insert(0, str(SUPPORT))

from harness import COMMAND_ENV  # noqa: E402

pytest_plugins = ["finished_run", "sad_study", "dcag_study", "comparison_runs"]


@pytest.fixture(scope="session")
def tiny_ddpm_dir(tmp_path_factory) -> Path:
    """The built-in tiny DDPM (same block types as google's), saved with save_pretrained."""
    from attnedit.backends.tiny import build_tiny_ddpm

    return build_tiny_ddpm(tmp_path_factory.mktemp("models") / "tiny_ddpm")


@pytest.fixture(scope="session")
def zygote():
    """Runs console-script commands as processes forked from one interpreter that imported
    torch, diffusers and attnedit once (tests/support/zygote.py): the same call, without ~5 s of
    imports per command."""
    from zygote import Zygote

    with Zygote(COMMAND_ENV) as server:
        yield server


@pytest.fixture(scope="session")
def tiny_backend(tiny_ddpm_dir):
    from attnedit.backends.ddpm import DDPMBackend

    return DDPMBackend(str(tiny_ddpm_dir), device="cpu", num_inference_steps=10)

"""Shared test set-up: offline, W&B disabled, few threads, tiny models built once."""

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

REPO = Path(__file__).resolve().parents[1]
SUPPORT = Path(__file__).resolve().parent / "support"
sys.path.insert(0, str(SUPPORT))  # test-only modules: tiny model builders, recorders, the zygote


@pytest.fixture(scope="session")
def tiny_ddpm_dir(tmp_path_factory) -> Path:
    """The built-in tiny DDPM (same block types as google's), saved with save_pretrained."""
    from attnedit.backends.tiny import build_tiny_ddpm

    return build_tiny_ddpm(tmp_path_factory.mktemp("models") / "tiny_ddpm")


#: The environment of commands the tests run: offline, W&B off, one thread, the venv's scripts first.
COMMAND_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


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


def directions(argv: list[str]) -> None:
    """attnedit-directions in this process, with ``argv`` as its command line (a Hydra app
    reads sys.argv); exit 0 returns, any other exit raises SystemExit."""
    from attnedit.cli.directions import main

    saved = sys.argv
    sys.argv = ["attnedit-directions", *map(str, argv)]
    try:
        main()
    except SystemExit as done:
        if done.code not in (None, 0):
            raise
    finally:
        sys.argv = saved


def run_overrides(root: Path, model_dir: Path, *extra: str) -> list[str]:
    """Overrides for a fast quickstart-like run writing under ``root``."""
    return [
        "model=tiny_ddpm",  # quickstart's own model is the shipped shapes DDPM
        "metrics=fidelity",
        f"paths.root_dir={root}",
        f"model.path={model_dir}",
        "model.num_inference_steps=4",
        "dataset.num_samples=2",
        "method.directions=2",
        "method.alphas=[-0.4,0.4]",
        "batch_size=2",
        "device=cpu",
        "progress=false",
        *extra,
    ]

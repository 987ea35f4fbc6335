"""What tests of every folder share: the checkout's root, the environment of the commands
the tests run, the overrides of a fast run, and attnedit-directions / attnedit-evaluate
called in this process.

Test modules and conftest files import these names from here (``conftest`` is no
importable module: with a conftest.py per folder it names whichever pytest imported last).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: The venv's console scripts (attnedit-run, attnedit-evaluate, ...).
BIN = Path(sys.executable).parent

#: The environment of commands the tests run: offline, W&B off, one thread, the venv's scripts first.
COMMAND_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1",
               "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


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


def evaluate(argv: list[str]) -> int:
    """attnedit-evaluate in this process: its config composed from key=value overrides, then scored."""
    from attnedit.evaluate.config import compose_config
    from attnedit.evaluate.evaluator import evaluate as score

    return score(compose_config(argv))


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

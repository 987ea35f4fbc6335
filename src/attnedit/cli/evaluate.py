"""``attnedit-evaluate``: the Hydra app on ``conf/evaluate/evaluate.yaml``: score a folder
of edited PIE-Bench images with the official metrics (:mod:`attnedit.evaluate`);
key=value overrides, ``--help``, ``--cfg job``, ``-m``."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from attnedit.cli.console import hydra_app
from attnedit.config import without_hydra

OUTPUTS = "choose an out= path in a folder you can write to"


def _evaluate(cfg: DictConfig) -> None:
    from attnedit.evaluate.evaluator import evaluate

    evaluate(without_hydra(cfg))


def main() -> None:
    from attnedit.evaluate.config import CONFIG_NAME, config_dir, quote_ids

    if "help" in sys.argv[1:]:  # a bare "help" asks for the help too
        sys.argv[1:] = ["--help"]
    sys.argv[1:] = quote_ids(sys.argv[1:])
    hydra_app(_evaluate, config_dir, CONFIG_NAME, OUTPUTS)

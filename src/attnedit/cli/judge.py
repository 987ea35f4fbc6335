"""``attnedit-judge``: the Hydra app on ``conf/judge_folder.yaml``: judge a folder of edited
images in a benchmark's official layout (:mod:`attnedit.run.judge_folder`);
key=value overrides, ``--help``, ``--cfg job``."""

from __future__ import annotations

from omegaconf import DictConfig

from attnedit.cli.console import hydra_app
from attnedit.config import conf_dir, without_hydra

OUTPUTS = "choose an out= folder you can write to"


def _judge(cfg: DictConfig) -> None:
    from attnedit.run.judge_folder import judge_folder

    judge_folder(without_hydra(cfg))


def main() -> None:
    hydra_app(_judge, conf_dir, "judge_folder", OUTPUTS)

"""``attnedit-run``: the Hydra app on ``conf/config.yaml`` (model x method x dataset x
metrics into a resumable run directory); ``-m`` sweeps, ``hydra/launcher=submitit_slurm``
sends the jobs to a cluster."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, open_dict

from attnedit.cli.console import hydra_app
from attnedit.config import conf_dir

RUN_OUTPUTS = ("choose folders you can write to: paths.results_dir=<dir> (results, Hydra's logs) "
               "or paths.runs_dir=<dir> (run directories)")

#: The failure lines of this process's runs (a multirun has several): the process exits 1 after them.
_FAILURES: list[str] = []


def _multirun_group(cfg: DictConfig) -> None:
    """Jobs of one multirun share a W&B group: the sweep folder's name, unless set."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if cfg.get("group") is None and HydraConfig.initialized():
        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            with open_dict(cfg):
                cfg.group = f"{cfg.name}/{Path(hc.sweep.dir).name}"


def _run(cfg: DictConfig) -> None:
    from attnedit.run.runner import Runner
    from attnedit.store.writable import check_writable_folder

    _multirun_group(cfg)
    check_writable_folder(cfg.paths.runs_dir, "paths.runs_dir")  # before any weights load or edit
    runner = Runner(cfg)
    if getattr(runner.backend, "random_weights", False):
        print(f"note: model '{runner.backend.name}' has RANDOM weights: this run shows the machinery, "
              "not real edits. Use model=ddpm_celebahq (or another trained model) for real results.")
    run_dir = runner.run().resolve()
    tables = run_dir / "tables" / "tables.md"
    print(tables.read_text() if tables.exists() else "")
    figures = sorted((run_dir / "figures").glob("*.png"))
    print(f"tables: {tables.parent}")
    for figure in figures:
        print(f"figure: {figure}")
    print(f"run dir: {run_dir}")
    _record_run_dir(run_dir)
    if runner.failure:  # every case ran; the failed ones are rows to retry
        print(runner.failure, file=sys.stderr)
        _FAILURES.append(runner.failure)


def _record_run_dir(run_dir: Path) -> None:
    """For the multirun summary (run.hydra_callbacks): the job's run dir in its Hydra output folder."""
    from hydra.core.hydra_config import HydraConfig

    from attnedit.run.hydra_callbacks import RUN_DIR_FILE

    if HydraConfig.initialized() and HydraConfig.get().runtime.output_dir:
        folder = Path(HydraConfig.get().runtime.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RUN_DIR_FILE).write_text(f"{run_dir}\n")


def main() -> None:
    hydra_app(_run, conf_dir, "config", RUN_OUTPUTS)
    if _FAILURES:  # after every job of a multirun, not in the first that had a failure
        sys.exit(1)

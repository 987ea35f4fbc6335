"""Hydra callbacks of attnedit-run (conf/hydra/default.yaml).

RunDirSummary: at the end of a multirun, the launching process lists every job's run
directory. Launchers that run jobs in other processes (submitit_local, submitit_slurm)
send the jobs' output to log files, so their ``run dir:`` lines never reach the console;
each job writes its run directory to ``run_dir.txt`` in its Hydra output folder
(``attnedit.cli.run``) and this callback reads them back from the sweep folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

RUN_DIR_FILE = "run_dir.txt"


class RunDirSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        found = sorted((p for p in sweep.glob(f"*/{RUN_DIR_FILE}") if p.parent.name.isdigit()),
                       key=lambda p: int(p.parent.name))
        if not found:
            return
        print(f"multirun: {len(found)} job(s) wrote run directories (sweep folder {sweep.resolve()}):")
        for path in found:
            print(f"job {path.parent.name} run dir: {path.read_text().strip()}")

"""A SLURM command of the READMEs up to the submission, on a machine without SLURM.

    python tests/support/slurm_dry_run.py attnedit-run -m ... hydra/launcher=submitit_slurm ...

runs the console script as given: Hydra parses the command line, composes the master
config (the submitit launcher's settings checked against its schema), the sweeper expands
the sweep into jobs and the submitit launcher builds its executor parameters, all as on a
login node. Only ``submitit.AutoExecutor`` is replaced: instead of calling ``sbatch``, it
composes each job's config the way the job itself does on its node
(``config_loader.load_sweep_config``, hydra_submitit_launcher's ``__call__``), resolves it,
and prints one line per job:

    slurm-dry-run: {"cluster": "slurm", "init": {...}, "parameters": {...}, "job": 0,
                    "overrides": [...], "config": {... the job's resolved config, hydra's node left out}}

The jobs themselves (the edits, on a GPU node with the weights) are not run.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import entry_points

PREFIX = "slurm-dry-run: "


class DryRunExecutor:
    """Stands in for submitit.AutoExecutor: records, composes, submits nothing."""

    def __init__(self, cluster: str, folder, **init) -> None:
        self.cluster, self.init, self.parameters = cluster, {"folder": str(folder), **init}, {}

    def update_parameters(self, **parameters) -> None:
        self.parameters.update(parameters)

    def map_array(self, launcher, overrides, job_dir_keys, job_nums, job_ids, states):
        from hydra.core.utils import JobReturn, JobStatus
        from omegaconf import OmegaConf, open_dict

        jobs = []
        for job_overrides, num in zip(overrides, job_nums):
            config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(job_overrides))
            with open_dict(config):  # the job's own settings; Hydra's node is set on the node at job start
                del config["hydra"]
            resolved = OmegaConf.to_container(config, resolve=True)
            print(PREFIX + json.dumps({"cluster": self.cluster, "init": self.init, "parameters": self.parameters,
                                       "job": num, "overrides": list(job_overrides), "config": resolved},
                                      default=str), flush=True)
            jobs.append(_Submitted(JobReturn(overrides=list(job_overrides), status=JobStatus.COMPLETED)))
        return jobs


class _Submitted:
    def __init__(self, result) -> None:
        self.result = result

    def results(self) -> list:
        return [self.result]


def main() -> None:
    import submitit

    submitit.AutoExecutor = DryRunExecutor  # the launcher imports submitit and reads this name at launch
    name, *args = sys.argv[1:]
    (script,) = entry_points(group="console_scripts", name=name)
    sys.argv = [name, *args]
    sys.exit(script.load()())


if __name__ == "__main__":
    main()

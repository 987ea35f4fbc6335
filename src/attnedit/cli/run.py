"""``attnedit-run``: the Hydra app on ``conf/config.yaml`` (model x method x dataset x
metrics into a resumable run directory); ``-m`` sweeps, ``hydra/launcher=submitit_slurm``
sends the jobs to a cluster."""

from __future__ import annotations

import atexit
import os
import shlex
import signal
import sys
import textwrap
from pathlib import Path
from typing import NoReturn

from omegaconf import DictConfig, open_dict

from attnedit.cli.console import hydra_app
from attnedit.config import conf_dir
from attnedit.errors import Interrupted, ResultsFolderError

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
    from attnedit.run.stages import stage
    from attnedit.run.validate import validate_run_config
    from attnedit.store.writable import check_writable_folder

    _multirun_group(cfg)
    validate_run_config(cfg)  # what the config alone decides, before torch is imported
    check_writable_folder(cfg.paths.runs_dir, "paths.runs_dir")  # before any weights load or edit
    runner = None
    try:
        with stage("loading torch, diffusers and attnedit's modules"):
            from attnedit.run.runner import Runner
        runner = Runner(cfg)
        _record_run_dir(runner.run_dir.resolve())  # before any case: a stopped job's rows are found too
        if getattr(runner.backend, "random_weights", False):
            print(f"note: model '{runner.backend.name}' has RANDOM weights: this run shows the machinery, "
                  "not real edits. Use model=ddpm_celebahq (or another trained model) for real results.")
        run_dir = runner.run().resolve()
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (main): one line, the stored cases kept
        signum = getattr(stop, "signum", signal.SIGINT)
        kept = runner.saved_text() if runner is not None else "stopped while starting (cases stored by earlier sessions are kept)"
        print(f"attnedit: interrupted by {signal.Signals(signum).name}: {kept}; resume with: {resume_command()}",
              file=sys.stderr)
        _exit_now(128 + signum)
    except ResultsFolderError as err:  # a full disk is no bug: what is kept, and how to go on
        raise ResultsFolderError(err.path, err.reason, err.kept, resume_command()) from err
    tables = run_dir / "tables" / "tables.md"
    print(tables.read_text() if tables.exists() else "")
    figures = sorted((run_dir / "figures").glob("*.png"))
    # paths inside the run dir, which the last line names in full: lines stay short (<= 120)
    print("tables: <run dir>/tables/")
    if figures:
        print(textwrap.fill(", ".join(f.name for f in figures), 120, initial_indent="figures in <run dir>/figures/: ",
                            subsequent_indent="  ", break_long_words=False, break_on_hyphens=False))
    print(f"run dir: {run_dir}")
    if runner.failure:  # every case ran; the failed ones are rows to retry
        print(runner.failure, file=sys.stderr)
        _FAILURES.append(runner.failure)


def _record_run_dir(run_dir: Path) -> None:
    """For the multirun summary (run.hydra_callbacks): the job's run dir in its Hydra output folder."""
    from hydra.core.hydra_config import HydraConfig

    from attnedit.store.run_index import RUN_DIR_FILE

    if HydraConfig.initialized() and HydraConfig.get().runtime.output_dir:
        folder = Path(HydraConfig.get().runtime.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RUN_DIR_FILE).write_text(f"{run_dir}\n")


def resume_command() -> str:
    """This process's own command line, secrets masked: run again, it resumes (finished
    cases are skipped)."""
    from attnedit.run.secrets import redact_argv

    return shlex.join(redact_argv([Path(sys.argv[0]).name, *sys.argv[1:]]))


def _exit_now(code: int) -> NoReturn:
    """Exit without the interpreter's teardown of torch and co. (seconds of pure CPU on a
    busy machine, after the user asked to stop); the rows are on disk and the exit
    handlers (logging, W&B) still run."""
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)


def _interrupt(signum: int, frame) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second one ends the process at once
    raise Interrupted(signum)


def main() -> None:
    handlers = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        hydra_app(_run, conf_dir, "config", RUN_OUTPUTS)
    except KeyboardInterrupt as stop:  # outside a job (composing the config, between a multirun's jobs)
        signum = getattr(stop, "signum", signal.SIGINT)
        print(f"attnedit: interrupted by {signal.Signals(signum).name}; resume with: {resume_command()}",
              file=sys.stderr)
        _exit_now(128 + signum)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    if _FAILURES:  # after every job of a multirun, not in the first that had a failure
        sys.exit(1)

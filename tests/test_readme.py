"""Every command in README.md and experiments/*/README.md runs (fenced ```bash blocks,
parsed here, so a new command is tested without touching this file): offline, at tiny
sizes (overrides appended), placeholders and data paths pointed at fixture folders.
Commands that need weights this offline machine cannot have must end in the documented
weights error (`hf download <id> ...`); commands listed in SKIPPED say why they are not run.

The commands of one README run in order in one folder (the tables of a study read the
runs of the command before); the READMEs run side by side. Each command is a process of
its own, forked from a server that imported torch, diffusers and attnedit once (the
``zygote`` fixture, tests/support/zygote.py): the same console-script call, without ~5 s of
imports per command."""

from __future__ import annotations

import re
import shlex
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness import REPO

READMES = [REPO / "README.md", *sorted((REPO / "experiments").glob("*/README.md"))]

#: (regex on the command, why it is not run here).
SKIPPED = [
    (r"^make (demo|test)\b", "installs packages into .venv (make install); the quickstart and the suite run here anyway"),
    (r"^hf download\b", "downloads from the model hub (no network here); the command is checked to exist "
                        "in tests/cli/test_console.py"),
    (r"^python -c .*weights=", "downloads torchvision weights (no network here)"),
    (r"hydra/launcher=submitit_slurm", "needs a SLURM cluster"),
    (r"^export ", "sets the cluster's shared paths for the commands after it"),
    (r"\$ATTNEDIT_ROOT", "reads the runs of the SLURM commands above (a shared cluster folder)"),
    (r"experiments/shapes_ddpm/train_(ddpm|regressor)\.py", "trains the shipped model (minutes to hours of CPU)"),
    (r"experiments/shapes_ddpm/evaluate_model\.py", "samples the shipped model at full size (minutes of CPU)"),
    (r"experiments/celebahq_sad/measure_alpha_scale\.py", "a GPU measurement on the CelebA-HQ weights"),
]
#: Models whose weights are not on this machine: their commands must end in the weights error.
NEEDS_WEIGHTS = r"celebahq_sad|celebahq_compare|lsun_sad|piebench_dcag|ddpm_celebahq|ddpm_church|flux_kontext|qwen"
#: Appended to every attnedit-run / attnedit-directions command: tiny, fast, quiet.
TINY_RUN = ["model.num_inference_steps=2", "numerical_floor.samples=0", "progress=false", "metric_weights=random"]
TINY_DATASET = {"piebench": "dataset.first_n=1"}  # by dataset; the others: dataset.num_samples=1
TINY_EVALUATE = ["weights=random", "progress=false", "workers=0"]


def readme_commands(path: Path) -> list[str]:
    """The commands of a README's ```bash blocks: continuation lines joined, comments dropped."""
    commands, block, inside = [], [], False
    for line in path.read_text().splitlines():
        if line.strip().startswith("```"):
            if inside:
                text = "\n".join(block).replace("\\\n", " ")
                for command in text.splitlines():
                    words = shlex.split(command, comments=True)
                    if words:
                        commands.append(shlex.join(words))
            inside, block = line.strip() == "```bash", []
        elif inside:
            block.append(line)
    return commands


def skip_reason(command: str) -> str | None:
    return next((why for pattern, why in SKIPPED if re.search(pattern, command)), None)


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_ddpm_dir):
    """Fixture folders for the README's data paths."""
    from piebench_fixture import write_edited, write_piebench_fixture

    base = tmp_path_factory.mktemp("readme_data")
    piebench = base / "PIE-Bench"
    write_piebench_fixture(piebench)
    write_edited(piebench, base / "edited")
    images = base / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(images / f"{i}.png")
    return {"piebench": piebench, "edited": base / "edited", "images": images}


def localize(command: str, data: dict) -> list[str]:
    """The command as run here: data paths -> fixtures, tiny overrides appended."""
    words = shlex.split(command)
    out = []
    for word in words:
        key, eq, value = word.partition("=")
        if eq and key == "dataset.root":
            value = str(data["images"] if value == "<folder>" else data["piebench"])
        elif eq and key == "edited":
            value = str(data["edited"])
        elif eq and key == "out" and value.startswith("/"):
            value = value.lstrip("/")
        out.append(f"{key}={value}" if eq else word)
    if out[0] == "attnedit-run":
        dataset = next((v for k, v in TINY_DATASET.items() if k in command), "dataset.num_samples=1")
        out += [*TINY_RUN, dataset]
        if "attn_input_pca" in command:  # its discovery needs a step inside the window: 2 steps have none
            out[out.index("model.num_inference_steps=2")] = "model.num_inference_steps=5"
    if out[0] == "attnedit-directions":
        out += ["metric_weights=random"]
    if out[0] == "attnedit-evaluate":
        out += TINY_EVALUATE
    return out


def run_readme(readme: Path, data: dict, cwd: Path, zygote) -> list[tuple[str, str | None, int, str, str]]:
    """(command, skip reason, exit code, stdout, stderr) per command, in order, in ``cwd``."""
    return [run_command(command, data, cwd, zygote) for command in readme_commands(readme)]


def run_command(command: str, data: dict, cwd: Path, zygote) -> tuple[str, str | None, int, str, str]:
    """One README command, localized, run as its own process (forked from ``zygote``)."""
    why = skip_reason(command)
    if why:
        return command, why, 0, "", ""
    words = localize(command, data)
    # Shell globs (results/runs/<study>/*) as the shell expands them; <signature>: the run folder.
    expanded = []
    for word in words:
        word = word.replace("<signature>", "*")
        hits = sorted(str(p.relative_to(cwd)) for p in cwd.glob(word)) if "*" in word and "=" not in word else []
        expanded += hits or [word]
    done = zygote.run(expanded, cwd=cwd, timeout=1200)
    return command, None, done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def outcomes(data, tmp_path_factory, zygote):
    folders = {readme: tmp_path_factory.mktemp(readme.parent.name) for readme in READMES}
    with ThreadPoolExecutor(len(READMES)) as pool:
        futures = {readme: pool.submit(run_readme, readme, data, folders[readme], zygote) for readme in READMES}
        return {readme: future.result() for readme, future in futures.items()}


def test_the_readmes_hold_commands():
    commands = [c for r in READMES for c in readme_commands(r)]
    assert len(READMES) >= 5 and len(commands) >= 25
    assert "attnedit-run dataset=image_folder 'dataset.root=<folder>' dataset.size=32" in commands
    assert any(skip_reason(c) is None for c in commands)


@pytest.mark.slow
@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_readme_command_runs_or_ends_in_its_documented_error(outcomes, readme):
    for command, why, code, out, err in outcomes[readme]:
        if why:
            continue
        last = (err.strip().splitlines() or [""])[-1]
        context = f"\n$ {command}\nexit {code}\n--- stdout ---\n{out[-1500:]}\n--- stderr ---\n{err[-3000:]}"
        if re.search(NEEDS_WEIGHTS, command) and command.startswith(("attnedit-run", "attnedit-directions")):
            assert code == 2 and last.startswith("attnedit: error: ") and "`hf download " in last, context
        elif command.startswith("attnedit-tables") and code != 0:
            # the runs it reads come from a command above that needs weights (none here)
            assert code == 2 and "is not a run directory" in last, context
        else:
            assert code == 0, context
            if command.startswith("attnedit-run"):
                # a multirun ends with its summary: "job <i> run dir: <path>" per job
                assert re.match(r"(job \d+ )?run dir: ", out.strip().splitlines()[-1]), context

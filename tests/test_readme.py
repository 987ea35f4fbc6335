"""Every command in README.md and experiments/*/README.md runs (fenced ```bash blocks,
parsed here, so a new command is tested without touching this file): offline, at tiny
sizes (overrides appended), placeholders and data paths pointed at fixture folders.
Commands that need weights this offline machine cannot have must end in the documented
weights error (`hf download <id> ...`); commands listed in SKIPPED say why they are not run.
Every README has at least one command checked here.

SLURM commands (``hydra/launcher=submitit_slurm``) run up to the submission
(tests/support/slurm_dry_run.py): each job's config is composed as on its node and
checked against the command's overrides, the job count against the command's sweeps, the
launcher's settings against its ``hydra.launcher.*`` values. ``export`` lines set the
environment of the commands after them (absolute paths moved into the README's folder);
commands reading the SLURM runs (``$ATTNEDIT_ROOT/...``) must end in the documented
missing-run error. Scripts (``python <script>``) run with the tiny options and output
folders of SCRIPTS, never over the shipped files (checked).

The commands of one README run in order in one folder (the tables of a study read the
runs of the command before); the READMEs run side by side. Each command is a process of
its own, forked from a server that imported torch, diffusers and attnedit once (the
``zygote`` fixture, tests/support/zygote.py): the same console-script call, without ~5 s of
imports per command."""

from __future__ import annotations

import getpass
import glob
import hashlib
import json
import re
import shlex
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness import COMMAND_ENV, REPO

READMES = [REPO / "README.md", *sorted((REPO / "experiments").glob("*/README.md"))]

#: (regex on the command, why it is not run here).
SKIPPED = [
    (r"^make (demo|test)\b", "installs packages into .venv (make install); the quickstart and the suite run here anyway"),
    (r"^hf download\b", "downloads from the model hub (no network here); the command is checked to exist "
                        "in tests/cli/test_console.py"),
    (r"^python -c .*weights=", "downloads torchvision weights (no network here)"),
    (r"experiments/celebahq_sad/measure_alpha_scale\.py", "a GPU measurement on the CelebA-HQ weights"),
    (r"^(huggingface-cli download|git clone|git -C|tar -xf)\b", "fetches or unpacks a benchmark (no network here); "
                                                               "fixture copies stand in for the data"),
]
#: Commands that submit to SLURM: run up to the submission (tests/support/slurm_dry_run.py).
SLURM = r"hydra/launcher=submitit_slurm"
#: Commands that read the runs of SLURM commands (a shared cluster folder): the documented missing-run error.
READS_SLURM_RUNS = r"\$ATTNEDIT_ROOT"
#: Scripts: (options appended: tiny, outputs into the README's folder; the files they must write there).
#: The scripts' default outputs are the shipped files, so a script without an entry is not run.
SCRIPTS = {
    "experiments/shapes_ddpm/train_ddpm.py": (
        ["--steps", "2", "--batch-size", "2", "--warmup", "1", "--threads", "1",
         "--out", "shapes_ddpm", "--work", "train_work", "--log", "training_log.json"],
        ["shapes_ddpm/unet/config.json", "shapes_ddpm/unet/diffusion_pytorch_model.safetensors",
         "shapes_ddpm/scheduler/scheduler_config.json", "training_log.json"]),
    "experiments/shapes_ddpm/train_regressor.py": (
        ["--steps", "2", "--batch-size", "4", "--threads", "1", "--out", "shapes_regressor",
         "--log", "regressor_log.json"],
        ["shapes_regressor/config.json", "shapes_regressor/model.safetensors", "regressor_log.json"]),
    "experiments/shapes_ddpm/evaluate_model.py": (
        ["--samples", "2", "--steps", "2", "--out", "report"],
        ["report/model_report.json", "report/model_report.md", "report/samples.png"]),
    "experiments/gedit_bench/estimate_judge_cost.py": ([], []),  # prints a table; reads attnedit's own prompts here
    "experiments/gedit_bench/failure_fill.py": (["--answered", "10", "--failed", "2"], []),
}
#: What the scripts write by default: must be the same bytes after the READMEs ran.
SHIPPED = ["src/attnedit/assets/shapes_ddpm", "src/attnedit/assets/shapes_regressor", "experiments/shapes_ddpm"]
#: Models whose weights are not on this machine: their commands must end in the weights error.
NEEDS_WEIGHTS = (r"celebahq_sad|celebahq_compare|lsun_sad|piebench_dcag|ddpm_celebahq|ddpm_church|flux_kontext|qwen"
                 r"|gedit_dcag|imgedit_dcag|^attnedit-judge")
#: The benchmark fixture a command's data paths point at (by the words of the command).
BENCHMARK_DATA = {"imgedit": "imgedit", "gedit": "gedit"}
#: Appended to every attnedit-run / attnedit-directions command: tiny, fast, quiet.
TINY_RUN = ["model.num_inference_steps=2", "numerical_floor.samples=0", "progress=false", "metric_weights=random"]
TINY_DATASET = {"piebench": "dataset.first_n=1", "gedit": "dataset.first_n=1", "imgedit": "dataset.first_n=1"}  # the others: num_samples=1
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
    from judge_fixtures import build_gedit_copy, build_imgedit_copy, write_gedit_edits, write_imgedit_edits

    gedit = build_gedit_copy(base / "GEdit-Bench", n_per_type=1, languages=("en",))
    write_gedit_edits(base / "gedit_edits", gedit.rows)
    imgedit = build_imgedit_copy(base / "ImgEdit", n_per_type=1)
    write_imgedit_edits(base / "imgedit_edits", imgedit)
    return {"piebench": piebench, "edited": base / "edited", "images": images, "gedit": gedit.root,
            "gedit_edits": base / "gedit_edits", "imgedit": imgedit.root, "imgedit_images": imgedit.images_root,
            "imgedit_edits": base / "imgedit_edits"}


def localize(command: str, data: dict) -> list[str]:
    """The command as run here: data paths -> fixtures, tiny overrides appended."""
    words = shlex.split(command)
    if Path(words[0]).name.startswith("python"):  # a script of SCRIPTS: from the checkout, tiny options
        return ["python", str(REPO / words[1]), *words[2:], *SCRIPTS[words[1]][0]]
    out = []
    benchmark = next((name for word, name in BENCHMARK_DATA.items() if word in command), None)
    for word in words:
        key, eq, value = word.partition("=")
        if eq and key in ("dataset.root", "dataset.gedit.root", "dataset.imgedit.root"):
            value = str(data["images"] if value == "<folder>" else data[benchmark] if benchmark else data["piebench"])
        elif eq and key in ("dataset.images_root", "dataset.imgedit.images_root"):
            value = str(data["imgedit_images"])
        elif eq and key == "edits":
            value = str(data[f"{benchmark}_edits"])
        elif eq and key.startswith("judge.prompts."):
            continue  # the official prompt files are not here: attnedit's own prompts (marked in every title)
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


def run_readme(readme: Path, data: dict, cwd: Path, zygote) -> list[tuple[str, str | None, int, str, str, dict]]:
    """(command, skip reason, exit code, stdout, stderr, exported variables) per command, in
    order, in ``cwd``; an ``export`` line sets the variables of the commands after it."""
    exported, outcomes = {}, []
    for command in readme_commands(readme):
        if command.startswith("export "):
            exported = {**exported, **export(command, exported, cwd)}
            outcomes.append((command, "sets variables (checked by the commands after it)", 0, "", "", exported))
        else:
            outcomes.append((*run_command(command, data, cwd, zygote, exported), exported))
    return outcomes


def expand_variables(word: str, variables: dict) -> str:
    """$NAME / ${NAME} as the shell expands them (unset: left as written)."""
    return re.sub(r"\$(?:\{(\w+)\}|(\w+))", lambda m: variables.get(m[1] or m[2], m[0]), word)


def export(command: str, exported: dict, cwd: Path) -> dict:
    """The variables of an ``export`` line; absolute paths (a cluster's shared folder) moved into ``cwd``."""
    variables = {"USER": getpass.getuser(), **COMMAND_ENV, **exported}
    out = {}
    for word in shlex.split(command)[1:]:
        name, eq, value = word.partition("=")
        assert eq, f"{command}: export of {word} without a value"
        value = expand_variables(value, {**variables, **out})
        out[name] = str(cwd / value.lstrip("/")) if value.startswith("/") else value
    return out


def run_command(command: str, data: dict, cwd: Path, zygote, exported: dict) -> tuple[str, str | None, int, str, str]:
    """One README command, localized, run as its own process (forked from ``zygote``)."""
    why = skip_reason(command)
    if why:
        return command, why, 0, "", ""
    first, *rest = shlex.split(command)
    if Path(first).name.startswith("python") and (rest[:1] or ["-"])[0] not in SCRIPTS:
        return command, None, 1, "", "not run: a script needs tiny options and output folders in SCRIPTS (or a SKIPPED reason)"
    if re.search(SLURM, command):  # as written, up to the submission (no SLURM here): nothing runs, nothing to shrink
        words = ["python", str(REPO / "tests" / "support" / "slurm_dry_run.py"), first, *rest]
    else:
        words = localize(command, data)
    words = [expand_variables(word, exported) for word in words]
    # Shell globs (results/runs/<study>/*) as the shell expands them; <signature>: the run folder.
    expanded = []
    for word in words:
        word = word.replace("<signature>", "*")
        hits = sorted(glob.glob(word, root_dir=cwd)) if "*" in word and "=" not in word else []
        expanded += hits or [word]
    done = zygote.run(expanded, cwd=cwd, env={**COMMAND_ENV, **exported} if exported else None, timeout=1200)
    return command, None, done.returncode, done.stdout, done.stderr


def digests(paths: list[str]) -> dict[str, str]:
    """sha256 of every file under ``paths`` (relative to the checkout)."""
    files = sorted(f for p in paths for f in (REPO / p).rglob("*") if f.is_file())
    return {str(f.relative_to(REPO)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def sweep_values(value: str) -> list[str] | None:
    """The values of a Hydra sweep override's value (``a,b,c``, ``range(n)``), None for one value."""
    found = re.fullmatch(r"range\((-?\d+)(?:,\s*(-?\d+))?(?:,\s*(-?\d+))?\)", value)
    if found:
        return [str(i) for i in range(*(int(g) for g in found.groups() if g is not None))]
    parts, depth, start = [], 0, 0
    for i, char in enumerate(value):  # commas at the top level, not inside [..] or (..)
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(value[start:i])
            start = i + 1
    return [*parts, value[start:]] if parts else None


def check_slurm_dry_run(command: str, exported: dict, out: str, context: str) -> None:
    """The jobs a SLURM command would submit, against the command as written."""
    jobs = [json.loads(line.removeprefix("slurm-dry-run: ")) for line in out.splitlines()
            if line.startswith("slurm-dry-run: ")]
    overrides = [w.partition("=") for w in shlex.split(command)[1:] if "=" in w and not w.startswith("-")]
    sweeps = {key.lstrip("+"): sweep_values(value) for key, _, value in overrides}
    expected_jobs = 1
    for values in sweeps.values():
        expected_jobs *= len(values) if values else 1
    assert len(jobs) == expected_jobs, f"{len(jobs)} jobs, the command's sweeps make {expected_jobs}" + context
    assert sorted(job["job"] for job in jobs) == list(range(expected_jobs)), context
    for key, _, value in overrides:
        key = key.lstrip("+")
        if key.startswith("hydra.launcher."):  # the launcher's setting, as submitit gets it
            name = key.removeprefix("hydra.launcher.")
            for job in jobs:
                given = {**job["init"], **job["parameters"]}
                got = given.get(name, given.get(f"slurm_{name}", "<not passed to submitit>"))
                assert str(got) == value, f"{key}: submitit gets {got}" + context
        elif "." in key and not key.startswith("hydra"):  # a config key of each job
            got = sorted({str(select(job["config"], key)) for job in jobs})
            assert got == sorted(set(sweeps[key] or [value])), f"{key}: the jobs have {got}" + context
    assert {job["cluster"] for job in jobs} == {"slurm"}, context
    if "ATTNEDIT_ROOT" in exported:  # results, runs and the sweep folder with submitit's logs on the shared folder
        for job in jobs:
            assert job["config"]["paths"]["root_dir"] == exported["ATTNEDIT_ROOT"], context
            assert Path(job["init"]["folder"]).is_relative_to(exported["ATTNEDIT_ROOT"]), context
    if "ATTNEDIT_CACHE" in exported:
        assert {job["config"]["paths"]["cache_dir"] for job in jobs} == {exported["ATTNEDIT_CACHE"]}, context


def select(config: dict, key: str):
    for part in key.split("."):
        config = config[part] if isinstance(config, dict) and part in config else "<missing>"
    return config


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return {readme: tmp_path_factory.mktemp(readme.parent.name) for readme in READMES}


@pytest.fixture(scope="module")
def shipped_before():
    return digests(SHIPPED)


@pytest.fixture(scope="module")
def outcomes(data, folders, shipped_before, zygote):
    with ThreadPoolExecutor(len(READMES)) as pool:
        futures = {readme: pool.submit(run_readme, readme, data, folders[readme], zygote) for readme in READMES}
        return {readme: future.result() for readme, future in futures.items()}


def test_the_readmes_hold_commands():
    commands = [c for r in READMES for c in readme_commands(r)]
    assert len(READMES) >= 5 and len(commands) >= 25
    assert "attnedit-run dataset=image_folder 'dataset.root=<folder>' dataset.size=32" in commands
    for readme in READMES:  # every README has commands checked here, not only skipped ones
        checked = [c for c in readme_commands(readme) if skip_reason(c) is None and not c.startswith("export ")]
        assert checked, f"{readme.relative_to(REPO)}: every command is skipped"


def test_sweep_values_as_hydra_expands_them():
    assert sweep_values("range(16)") == [str(i) for i in range(16)]
    assert sweep_values("none,grag,dcag") == ["none", "grag", "dcag"]
    assert sweep_values("[0.2],[0.4]") == ["[0.2]", "[0.4]"]
    assert sweep_values("[-1,1]") is None and sweep_values("/shared/data/PIE-Bench") is None


@pytest.mark.slow
@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_readme_command_runs_or_ends_in_its_documented_error(outcomes, folders, readme):
    checked = [o for o in outcomes[readme] if o[1] is None]
    assert checked, f"{readme.relative_to(REPO)}: no command checked"
    for command, why, code, out, err, exported in outcomes[readme]:
        if why:
            continue
        last = (err.strip().splitlines() or [""])[-1]
        context = f"\n$ {command}\nexit {code}\n--- stdout ---\n{out[-1500:]}\n--- stderr ---\n{err[-3000:]}"
        if re.search(SLURM, command):
            assert code == 0, context
            check_slurm_dry_run(command, exported, out, context)
        elif re.search(READS_SLURM_RUNS, command):
            # the runs come from the SLURM commands above (submitted nowhere here): the documented missing-run error
            assert code == 2 and "is not a run directory" in last, context
            assert exported.get("ATTNEDIT_ROOT", "<ATTNEDIT_ROOT not exported>") in last, context
        elif Path(shlex.split(command)[0]).name.startswith("python"):
            assert code == 0, context
            for name in SCRIPTS[shlex.split(command)[1]][1]:
                assert (folders[readme] / name).is_file(), f"{name} not written" + context
        elif re.search(NEEDS_WEIGHTS, command) and command.startswith(("attnedit-run", "attnedit-directions",
                                                                        "attnedit-judge")):
            assert code == 2 and last.startswith("attnedit: error: ") and "`hf download " in last, context
        elif command.startswith(("attnedit-tables", "attnedit-rescore")) and code != 0:
            # the runs it reads come from a command above that needs weights (none here): one folder is not a
            # run directory; a glob's folders are runs that never started, each named, then one error line
            assert code == 2 and re.search(r"is not a run directory|no run that started in the \d+ folders", last), context
        else:
            assert code == 0, context
            if command.startswith("attnedit-run"):
                # a run ends with "run dir: <path>"; a multirun with a line per job, then "report: <path>"
                assert re.match(r"(run dir|report): ", out.strip().splitlines()[-1]), context
            if re.match(r"attnedit-(run|report)\b", command) and " -m " not in f"{command} ":
                # what `make demo` prints (a run, then its report): read at a glance, no line over 120
                wide = [line for line in out.splitlines() if len(line) > 120]
                assert not wide, f"{len(wide)} lines over 120, e.g. {wide[0]!r}" + context


@pytest.mark.slow
def test_the_readme_commands_leave_the_shipped_files_alone(outcomes, shipped_before):
    assert digests(SHIPPED) == shipped_before

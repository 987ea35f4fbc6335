"""Every console entry point, in processes of their own: a bad input of each kind ends
stderr with the project's one line naming the thing and the fix (never Hydra's wrapper or
a traceback), and --help answers with the usage.

The processes of one entry point start together. They are forked from the ``zygote``
fixture's server (the console script's own call, without importing torch each time),
except those that run as another user (setpriv)."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import BIN, COMMAND_ENV, run_overrides

# Root ignores file permissions: the read-only cases run as nobody where we are root.
UNPRIVILEGED = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
CAN_DROP = not UNPRIVILEGED or shutil.which("setpriv") is not None


def _run(entry: str, args: list[str], unprivileged: bool = False, cwd: Path | None = None,
         zygote=None) -> tuple[int, str, str]:
    """One command: forked from ``zygote`` when given, else a fresh process (always as nobody)."""
    cwd = cwd or tempfile.gettempdir()
    if zygote is not None and not unprivileged:
        done = zygote.run([entry, *args], cwd=cwd, env=COMMAND_ENV, timeout=900)
        return done.returncode, done.stdout, done.stderr
    command = [*(UNPRIVILEGED if unprivileged else []), str(BIN / entry), *args]
    env = {**COMMAND_ENV, "HOME": tempfile.gettempdir()} if unprivileged else COMMAND_ENV
    done = subprocess.run(command, env=env, cwd=cwd, text=True, capture_output=True, timeout=900)
    return done.returncode, done.stdout, done.stderr


def _all(entry: str, cases: dict[str, tuple[list[str], bool]], zygote) -> dict[str, tuple[int, str, str]]:
    with ThreadPoolExecutor(3) as pool:  # 2 cores
        futures = {name: pool.submit(_run, entry, args, unprivileged, zygote=zygote)
                   for name, (args, unprivileged) in cases.items()}
        return {name: future.result() for name, future in futures.items()}


def _last_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def folders():
    """A writable and a read-only folder, reachable by nobody (pytest's tmp is root-only)."""
    base = Path(tempfile.mkdtemp(prefix="attnedit-entry-"))
    base.chmod(0o755)
    writable, readonly = base / "w", base / "ro"
    writable.mkdir(mode=0o777)
    readonly.mkdir()
    writable.chmod(0o777)
    readonly.chmod(0o555)
    yield writable, readonly
    readonly.chmod(0o755)
    shutil.rmtree(base)


@pytest.fixture(scope="module")
def wrong_width(tmp_path_factory) -> Path:
    """A directions file whose vectors (width 5) fit no layer of the tiny DDPM (64 channels)."""
    from attnedit.methods.directions import LayerDirections, write_directions

    path = tmp_path_factory.mktemp("directions") / "other_model.safetensors"
    return write_directions(path, {"mid_block.attentions.0": LayerDirections(np.ones(5), np.eye(5))})


def _check(result: tuple[int, str, str], expected: list[str]) -> None:
    code, out, err = result
    if expected == ["--help"]:
        assert code == 0, err
        return
    line = _last_line(err)
    assert code == 2, err
    assert line.startswith("attnedit: error: "), err
    for part in expected:
        assert part in line, f"{part!r} not in the last line:\n{line}\n--- stderr ---\n{err[-3000:]}"


# -- attnedit-run ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_results(tiny_ddpm_dir, tmp_path_factory, folders, wrong_width, zygote):
    root = tmp_path_factory.mktemp("run_errors")
    writable, readonly = folders
    tiny = ["model=tiny_ddpm", f"model.path={tiny_ddpm_dir}", f"paths.root_dir={root}", "dataset.num_samples=1"]
    nowhere = root / "nowhere"
    cases = {
        "unknown config": (["model=nosuch"], False),
        "typo": (["method.layerz=3"], False),
        "bad value": ([*tiny, "method.position=sideways"], False),
        "cuda": ([*tiny, "device=cuda"], False),
        "no dataset folder": ([*tiny, "dataset=image_folder", f"dataset.root={nowhere}"], False),
        "alphas not a list": ([*tiny, "method.alphas=0.3"], False),
        "sweep without -m": ([*tiny, "method=sad,random"], False),
        "multirun job": (["-m", *tiny, "method.alphas=0.3,[0.2,0.4]", "dataset.num_samples=0"], False),
        "weights offline": (["model=ddpm_celebahq", f"paths.root_dir={root}"], False),
        "weights folder": (["model=ddpm_celebahq", f"model.path={nowhere}", f"paths.root_dir={root}"], False),
        "directions width": ([*tiny, f"method.directions_file={wrong_width}", "method.layers=[mid_block.attentions.0]"],
                             False),
        "read-only results": ([f"paths.results_dir={readonly}/results"], True),
        "read-only runs": ([f"paths.root_dir={writable}", f"paths.runs_dir={readonly}/runs"], True),
        "help": (["--help"], False),
    }
    if not CAN_DROP:
        cases = {k: v for k, v in cases.items() if not v[1]}
    return _all("attnedit-run", cases, zygote), root, readonly


#: Errors the config alone decides (attnedit.run.validate).
CONFIG_ONLY = ("cuda", "no dataset folder", "alphas not a list", "sweep without -m", "multirun job")

RUN_EXPECTED = {
    "unknown config": ["model=nosuch is not a config in conf/model/", "tiny_ddpm"],
    "typo": ["method.layerz is not a key", "did you mean method.layers?", "+method.layerz=<value>"],
    "bad value": ["position='sideways' is not one of"],
    "cuda": ["device='cuda' was asked for but CUDA is not available", "use device=cpu"],
    "no dataset folder": ["dataset.root={root}/nowhere does not exist; point it at a folder of images"],
    "alphas not a list": ["method.alphas: expected a list of numbers, got 0.3; write method.alphas=[0.3]"],
    "sweep without -m": ["method=sad,random is a sweep: add -m (--multirun)", "method=[sad,random]"],
    "multirun job": ["job #1 (method.alphas=[0.2,0.4]): dataset.num_samples=0 must be >= 1"],
    "weights offline": ["`hf download google/ddpm-ema-celebahq-256 --local-dir <dir>`", "model.path=<dir>"],
    "weights folder": ["is not an existing directory", "`hf download google/ddpm-ema-celebahq-256 --local-dir {root}/nowhere`"],
    "directions width": ["holds vectors of width 5, this model's layer takes 64 channels", "attnedit-directions"],
    "read-only results": ["cannot write {readonly}/results (Permission denied)", "paths.results_dir=<dir>"],
    "read-only runs": ["paths.runs_dir={readonly}/runs: cannot write in {readonly}/runs (Permission denied)",
                       "paths.runs_dir=<dir>"],
    "help": ["--help"],
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(RUN_EXPECTED))
def test_attnedit_run_errors_end_in_one_line(run_results, case):
    results, root, readonly = run_results
    if case == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    if case not in results:
        pytest.skip("no setpriv to drop root's rights: a read-only folder cannot be tested as root")
    _check(results[case], [p.format(root=root, readonly=readonly) for p in RUN_EXPECTED[case]])
    code, out, err = results[case]
    assert "HYDRA_FULL_ERROR" not in err and "Traceback" not in err and "Error executing job" not in err
    if case in CONFIG_ONLY:  # decided before torch is imported (and so before any model loads)
        assert "loading torch" not in err, err
    if case == "multirun job":  # a job's error ends that job; the next one still runs
        assert "attnedit: error: job #0 (method.alphas=0.3): method.alphas: expected a list of numbers" in err, err
    if case == "help":
        assert out.startswith("attnedit-run: run an editing study") and "== Configuration groups ==" in out
        assert "experiment: celebahq_compare" in out and "cli" not in out.split()


# -- attnedit-directions --------------------------------------------------------------------

DIRECTIONS_EXPECTED = {
    "unknown config": (["model=nosuch", "out=d.safetensors"], ["model=nosuch is not a config in conf/model/"]),
    "typo": (["layerz=3", "out=d.safetensors"], ["layerz is not a key", "did you mean layers?"]),
    "weights offline": (["model=ddpm_celebahq", "out=d.safetensors"],
                        ["`hf download google/ddpm-ema-celebahq-256 --local-dir <dir>`"]),
    "cuda": (["model=tiny_ddpm", "device=cuda", "out=d.safetensors"], ["model.device='cuda'", "CUDA is not available"]),
    "read-only out": (["out={readonly}/d.safetensors"],
                      ["out={readonly}/d.safetensors: cannot write in {readonly} (Permission denied)"]),
    "help": (["--help"], ["--help"]),
}


@pytest.fixture(scope="module")
def directions_results(folders, tiny_ddpm_dir, zygote):
    _, readonly = folders
    cases = {}
    for name, (args, _) in DIRECTIONS_EXPECTED.items():
        args = [a.format(readonly=readonly) for a in args]
        if name == "cuda":
            args.insert(1, f"model.path={tiny_ddpm_dir}")
        if name == "read-only out" and not CAN_DROP:
            continue
        cases[name] = (args, name == "read-only out")
    return _all("attnedit-directions", cases, zygote), readonly


@pytest.mark.slow
@pytest.mark.parametrize("case", list(DIRECTIONS_EXPECTED))
def test_attnedit_directions_errors_end_in_one_line(directions_results, case):
    results, readonly = directions_results
    if case == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    if case not in results:
        pytest.skip("no setpriv to drop root's rights")
    _check(results[case], [p.format(readonly=readonly) for p in DIRECTIONS_EXPECTED[case][1]])
    code, out, err = results[case]
    assert "Traceback" not in err
    if case == "help":
        assert out.startswith("usage: attnedit-directions") and "out: ???" in out


# -- attnedit-tables and attnedit-evaluate ---------------------------------------------------

@pytest.mark.slow
def test_attnedit_tables_errors_and_help(tmp_path, zygote):
    results = _all("attnedit-tables", {"not a run": ([str(tmp_path)], False), "no folder": (["--out"], False),
                                       "help": (["--help"], False)}, zygote)
    _check(results["not a run"], [f"{tmp_path} is not a run directory (no manifest.json)", "'run dir:'"])
    _check(results["no folder"], ["--out needs a folder"])
    code, out, err = results["help"]
    assert code == 0 and out.startswith("usage: attnedit-tables <run dir>"), err


def test_a_forked_command_is_what_a_fresh_process_gives(zygote, tmp_path):
    """The zygote's children: the exit code, stdout and stderr of the console script run fresh."""
    for args in (["--help"], [str(tmp_path)], ["--out"]):
        fresh = _run("attnedit-tables", args, cwd=tmp_path)
        assert _run("attnedit-tables", args, cwd=tmp_path, zygote=zygote) == fresh, args


#: The other console scripts: (args, expected exit code, words of the last stderr line, or of stdout's first line for --help).
OTHER_COMMANDS = {
    "attnedit-status": [([], 2, ["no runs under {tmp}/results/runs (no such folder)", "--root"]),
                        (["{tmp}", "--shards"], 2, ["--shards needs a number"]),
                        (["{tmp}"], 2, ["{tmp} is not a run directory (no manifest.json)"]),
                        (["--help"], 0, ["usage: attnedit-status"])],
    "attnedit-report": [([], 2, ["give at least one run directory"]),
                        (["--bogus", "{tmp}"], 2, ["unknown option --bogus"]),
                        (["{tmp}", "--out"], 2, ["--out needs a folder"]),
                        (["{tmp}"], 2, ["{tmp} is not a run directory"]),
                        (["--help"], 0, ["usage: attnedit-report"])],
    "attnedit-reproduce": [([], 2, ["give a reproduction name"]),
                           (["nosuch"], 2, ["no reproduction 'nosuch'", "shapes_smoke"]),
                           (["shapes_smoke", "--reference"], 2, ["--reference needs a CSV file"]),
                           (["--help"], 0, ["usage: attnedit-reproduce"])],
    "attnedit-judge": [(["benchmark=gedit"], 2, ["edits=None is not a folder", "fullset/"]),
                       (["benchmark=gedit", "edits={tmp}"], 2, ["dataset.gedit.root is not set", "GEdit-Bench"]),
                       (["benchmark=nope", "edits={tmp}"], 2, ["benchmark=nope is not one of ('gedit', 'imgedit')"]),
                       (["benchmark=gedit", "edits={tmp}", "judge=nosuch"], 2, ["judge"]),
                       (["--help"], 0, ["attnedit-judge: judge a folder"])],
    "attnedit-rescore": [([], 2, ["give a run directory"]),
                         (["{tmp}"], 2, ["{tmp} is not a run directory"]),
                         (["--help"], 0, ["usage: attnedit-rescore"])],
}


@pytest.mark.parametrize("entry", list(OTHER_COMMANDS))
def test_other_commands_errors_and_help(entry, zygote, tmp_path):
    """status, report, reproduce, rescore: a bad command line or input is one line with the
    usage and exit 2; --help prints the usage on stdout and exits 0."""
    for args, expected_code, words in OTHER_COMMANDS[entry]:
        args = [a.format(tmp=tmp_path) for a in args]
        code, out, err = _run(entry, args, cwd=tmp_path, zygote=zygote)
        assert code == expected_code, (args, code, err)
        if expected_code == 0:
            assert out.startswith(words[0]) and not err.strip(), (args, out[:200], err)
            continue
        last = _last_line(err)
        assert last.startswith("attnedit: error: ") and len(err.strip().splitlines()) == 1, (args, err)
        for w in words:
            assert w.format(tmp=tmp_path) in last, (args, w, last)


EVALUATE_EXPECTED = {
    "typo": (["batchsize=2"], ["batchsize is not a key", "did you mean batch_size?"]),
    "bad value": (["missing=maybe"], ["missing='maybe' must be one of ('error', 'skip')"]),
    "cuda": (["device=cuda"], ["device='cuda' was asked for but CUDA is not available", "device=cpu"]),
    "read-only out": (["out={readonly}/sub/s.csv"], ["out={readonly}/sub/s.csv: cannot write in {readonly}/sub"]),
    "help": (["--help"], ["--help"]),
}


@pytest.mark.slow
def test_attnedit_evaluate_errors_and_help(folders, tmp_path, zygote):
    from piebench_fixture import write_edited, write_piebench_fixture

    _, readonly = folders
    root = tmp_path / "bench"
    write_piebench_fixture(root)
    edited = tmp_path / "edited"
    write_edited(root, edited)
    base = [f"dataset.root={root}", f"edited={edited}", "name=mine", f"out={tmp_path}/s.csv", "metrics=[psnr_whole]"]
    cases = {}
    for name, (args, _) in EVALUATE_EXPECTED.items():
        args = [a.format(readonly=readonly) for a in args]
        if name == "read-only out":
            cases[name] = ([*(a for a in base if not a.startswith("out=")), *args], True)
        elif name != "help":
            cases[name] = ([*base, *args], False)
        else:
            cases[name] = (args, False)
    if not CAN_DROP:
        cases.pop("read-only out")
    results = _all("attnedit-evaluate", cases, zygote)
    for name, result in results.items():
        if name == "cuda" and torch.cuda.is_available():
            continue
        # (read-only out: nobody cannot read pytest's root-only tmp either: out= is checked first)
        _check(result, [p.format(readonly=readonly) for p in EVALUATE_EXPECTED[name][1]])
        assert "Traceback" not in result[2] and "HYDRA_FULL_ERROR" not in result[2]
    code, out, err = results["help"]
    assert out.startswith("attnedit-evaluate: score a folder of edited PIE-Bench images") and "metrics:" in out
    assert not (tmp_path / "s.csv").exists()  # nothing written by any bad call


# -- weights errors name a command that exists --------------------------------------------

def test_the_download_command_named_exists_in_the_installed_huggingface_hub():
    from attnedit.backends.loading import download_command

    command = download_command("google/ddpm-ema-celebahq-256").split()
    scripts = {e.name: e.value for e in importlib.metadata.distribution("huggingface_hub").entry_points
               if e.group == "console_scripts"}
    assert command[0] in scripts, f"huggingface_hub installs {sorted(scripts)}, not {command[0]!r}"
    done = subprocess.run([str(BIN / command[0]), command[1], "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--local-dir" in done.stdout, done.stderr


# -- an unset required key --------------------------------------------------------------------

def test_unset_required_key_is_one_clear_error(tiny_ddpm_dir, tmp_path, capsys):
    from omegaconf.errors import MissingMandatoryValue

    from attnedit.cli.console import fail as _fail
    from attnedit.config import compose
    from attnedit.run.runner import Runner

    cfg = compose("config", run_overrides(tmp_path, tiny_ddpm_dir, "dataset=image_folder"))
    with pytest.raises(MissingMandatoryValue) as err:
        Runner(cfg)
    with pytest.raises(SystemExit):
        _fail(err.value)
    assert capsys.readouterr().err.strip() == (
        "attnedit: error: the config key 'dataset.root' has no value; pass dataset.root=<value> on the command line")


# -- an error raised in a Hydra job --------------------------------------------------------------

def test_a_job_error_is_its_own_one_line_without_hydras(tmp_path, monkeypatch, capsys):
    """Raised inside the job, an input error is its one line (exit 2) and a bug its
    traceback then the line saying so (exit 1), with no "Error executing job with
    overrides" line from Hydra before them; a later compose still works."""
    from attnedit.cli.console import hydra_app
    from attnedit.config import compose, conf_dir
    from attnedit.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["attnedit-run", f"paths.root_dir={tmp_path}"])
    for error, code, last in ((ConfigError("batch_size=0 must be >= 1"), 2,
                               "attnedit: error: batch_size=0 must be >= 1"),
                              (RuntimeError("boom"), 1, "attnedit: internal error RuntimeError: boom (a bug in")):
        def task(cfg, error=error):
            raise error

        with pytest.raises(SystemExit) as done:
            hydra_app(task, conf_dir, "config", "choose paths you can write to")
        err = capsys.readouterr().err
        assert done.value.code == code and err.strip().splitlines()[-1].startswith(last), err
        assert "Error executing job" not in err and ("Traceback" in err) == (code == 1), err
    assert compose("config", ["batch_size=3"]).batch_size == 3


def test_a_full_disk_where_the_library_names_no_file_is_one_line():
    """pyarrow's write errors carry the errno but no file name: still an output problem, not a bug."""
    import errno

    from attnedit.errors import explain

    err = OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")
    assert explain(err, "choose --out <dir>") == ("cannot write an output file (No space left on device); "
                                                  "choose --out <dir>")

"""Every console entry point, in processes of their own: a bad input of each kind ends
stderr with the project's one line naming the thing and the fix (never Hydra's wrapper or
a traceback), --help answers with the usage, secrets never reach a file, no unsafe load.

The processes of one entry point start together. They are forked from the ``zygote``
fixture's server (the console script's own call, without importing torch each time),
except those that run as another user (setpriv) and the secrets run (fresh processes)."""

from __future__ import annotations

import ast
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

from conftest import REPO

BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
# Root ignores file permissions: the read-only cases run as nobody where we are root.
UNPRIVILEGED = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
CAN_DROP = not UNPRIVILEGED or shutil.which("setpriv") is not None


def _run(entry: str, args: list[str], unprivileged: bool = False, cwd: Path | None = None,
         zygote=None) -> tuple[int, str, str]:
    """One command: forked from ``zygote`` when given, else a fresh process (always as nobody)."""
    cwd = cwd or tempfile.gettempdir()
    if zygote is not None and not unprivileged:
        done = zygote.run([entry, *args], cwd=cwd, env=ENV, timeout=900)
        return done.returncode, done.stdout, done.stderr
    command = [*(UNPRIVILEGED if unprivileged else []), str(BIN / entry), *args]
    env = {**ENV, "HOME": tempfile.gettempdir()} if unprivileged else ENV
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


RUN_EXPECTED = {
    "unknown config": ["model=nosuch is not a config in conf/model/", "tiny_ddpm"],
    "typo": ["method.layerz is not a key", "did you mean method.layers?", "+method.layerz=<value>"],
    "bad value": ["position='sideways' is not one of"],
    "cuda": ["model.device='cuda' was asked for but CUDA is not available", "model.device=cpu"],
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
    assert "HYDRA_FULL_ERROR" not in err and "Traceback" not in err
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
    "attnedit-status": [([], 2, ["give a run directory", "attnedit-status <run dir>"]),
                        (["{tmp}", "--shards"], 2, ["--shards needs a number"]),
                        (["{tmp}"], 2, ["{tmp} is not a run directory (no manifest.json)"]),
                        (["--help"], 0, ["usage: attnedit-status"])],
    "attnedit-report": [([], 2, ["give at least one run directory"]),
                        (["--bogus", "{tmp}"], 2, ["unknown option --bogus"]),
                        (["{tmp}", "--out"], 2, ["--out needs a folder"]),
                        (["{tmp}"], 2, ["{tmp} is not a run directory"]),
                        (["--help"], 0, ["usage: attnedit-report"])],
    "attnedit-reproduce": [([], 2, ["give a study name"]),
                           (["nosuch"], 2, ["no study 'nosuch'", "shapes_smoke"]),
                           (["shapes_smoke", "--reference"], 2, ["--reference needs a CSV file"]),
                           (["--help"], 0, ["usage: attnedit-reproduce"])],
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


# -- secrets ----------------------------------------------------------------------------------

SECRET = "abc123XYZ"


@pytest.mark.slow
def test_secrets_reach_no_file_a_run_writes(tiny_ddpm_dir, tmp_path):
    """A real (one-job multirun) run with +secret_token=... and +paths.api_key=...: the value
    is in no file under the outputs (run dir, Hydra's .hydra/ and multirun.yaml), its key is."""
    from conftest import run_overrides

    overrides = run_overrides(tmp_path, tiny_ddpm_dir, "dataset.num_samples=1", "method.directions=1",
                              "method.alphas=[0.4]", "model.num_inference_steps=2", "numerical_floor.samples=0",
                              "figures=false", f"+secret_token={SECRET}", f"+paths.api_key={SECRET}-2")
    code, out, err = _run("attnedit-run", ["-m", *overrides], cwd=tmp_path)
    assert code == 0, err[-3000:]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"config.yaml", "hydra.yaml", "overrides.yaml", "multirun.yaml", "manifest.json"} <= names
    leaks = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert not leaks, f"the secret is written in {leaks}"
    run_config = next(p for p in files if p.name == "config.yaml" and p.parent.name != ".hydra")
    assert "secret_token: '***'" in run_config.read_text()
    assert SECRET not in out + err


# -- unsafe loads -----------------------------------------------------------------------------

def _unsafe_loads(path: Path) -> list[str]:
    """torch.load without weights_only=True, any weights_only=False, pickle.load(s)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = f"{getattr(func.value, 'id', '?')}.{func.attr}" if isinstance(func, ast.Attribute) else ""
        flag = {k.arg: k.value for k in node.keywords}.get("weights_only")
        safe = isinstance(flag, ast.Constant) and flag.value is True
        if (name == "torch.load" and not safe) or (flag is not None and not safe) or name in ("pickle.load", "pickle.loads"):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_no_unsafe_loads_in_the_repository():
    files = [p for d in ("src", "experiments", "benchmarks", "tests") for p in (REPO / d).rglob("*.py")]
    assert len(files) > 50
    unsafe = [hit for f in files for hit in _unsafe_loads(f)]
    assert not unsafe, f"unsafe loads (use weights_only=True or safetensors): {unsafe}"

"""Extending attnedit as the README's "Extending attnedit" shows it: a new method (one module
+ one config), a new metric (one module + one config) and a new study (one folder), made in
a temporary directory, run through attnedit-run, attnedit-tables and attnedit-reproduce,
and nothing of the checkout edited."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from harness import COMMAND_ENV, REPO

METHOD = '''
"""An edit that goes through the sampler's edit path and changes nothing."""
import contextlib

from attnedit.backends.base import Control
from attnedit.methods.base import EditMethod


class PassThrough(Control):
    def latent_hook(self, t, x):
        return x


class NoopHook(EditMethod):
    def __init__(self, name="noop_hook", alphas=(0.0,)):
        self.name, self.alphas = name, [float(a) for a in alphas]

    def edits(self):
        return [{"alpha": a} for a in self.alphas]

    @contextlib.contextmanager
    def control(self, backend, edits):
        yield PassThrough()
'''

METRIC = '''
"""Mean absolute pixel difference between the edit and its reference."""
from attnedit.metrics.base import PairMetric


class MeanAbsDiff(PairMetric):
    name = "mean_abs_diff"
    higher_is_better = False

    def score(self, edited, reference, **context):
        return {self.name: (edited - reference).abs().flatten(1).mean(1).double()}
'''

STUDY = {
    "method/noop_hook.yaml": """
        _target_: lab_method.NoopHook
        name: noop_hook
        alphas: [0.0]
        """,
    "metrics/lab.yaml": """
        mean_abs_diff:
          _target_: lab_metric.MeanAbsDiff
        """,
    "experiment/lab_quick.yaml": """
        # @package _global_
        defaults:
          - override /model: shapes_ddpm
          - override /method: noop_hook
          - override /dataset: seeds
          - override /metrics: lab
        name: lab_quick
        dataset:
          num_samples: 2
        model:
          num_inference_steps: 4
        batch_size: 1
        device: cpu
        """,
    "reproduce/lab_smoke.yaml": """
        reference: ${{study:lab}}/reference/lab_smoke.csv
        runs:
          - [experiment=lab_quick, paths.root_dir={root}]
        """,
    # The edit path with a hook that returns x_t changes nothing: the difference is 0 exactly.
    "reference/lab_smoke.csv": """
        method,mean_abs_diff,mean_abs_diff_atol,source
        noop_hook,0.0,1e-7,identity edit: no pixel changes
        """,
    "README.md": """
        # lab: a study of one's own
        An identity edit through the sampler's edit path, scored by the mean absolute difference.
        """,
}


def checkout_state() -> str:
    """What git sees of the checkout: changed and untracked files, and the diff itself."""
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout
    diff = subprocess.run(["git", "diff"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return status + diff


@pytest.mark.slow
def test_a_new_method_metric_and_study_need_only_their_own_files(tmp_path):
    before = checkout_state()
    package, studies, root = tmp_path / "lab", tmp_path / "studies", tmp_path / "root"
    package.mkdir()
    (package / "lab_method.py").write_text(METHOD)
    (package / "lab_metric.py").write_text(METRIC)
    for name, text in STUDY.items():
        path = studies / "lab" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip().format(root=root))
    made = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    env = {**COMMAND_ENV, "ATTNEDIT_STUDIES": str(studies), "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": os.pathsep.join([str(package), COMMAND_ENV.get("PYTHONPATH", "")])}

    def command(*argv: str) -> str:
        done = subprocess.run(list(argv), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    out = command("attnedit-run", "experiment=lab_quick", f"paths.root_dir={root}")
    run_dir = Path(out.strip().splitlines()[-1].removeprefix("run dir: "))
    assert run_dir.parent == root / "results" / "runs" / "lab_quick"
    tables = command("attnedit-tables", str(run_dir))
    assert "mean_abs_diff" in tables and "noop_hook" in tables
    compared = command("attnedit-reproduce", "lab_smoke")
    assert "lab_smoke: 1 pass, 0 fail" in compared

    assert checkout_state() == before  # nothing of the checkout was edited
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file() and root not in p.parents) == made

"""attnedit-run (or another console script) as a real process, for what needs one: kills,
signals, writers sharing a run directory, shards; and what such runs wrote, read back."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

from harness import BIN, COMMAND_ENV


def cli(*args, root: Path, env: dict | None = None, tool: str = "attnedit-run") -> subprocess.Popen:
    """``tool`` started in ``root`` with ``args``; stdout and stderr in one pipe."""
    return subprocess.Popen([str(BIN / tool), *args], cwd=root, env={**COMMAND_ENV, **(env or {})}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen, expect_ok: bool = True) -> str:
    output, _ = process.communicate(timeout=900)
    if expect_ok:
        assert process.returncode == 0, output
    return output


def run_dir_of(output: str) -> Path:
    """The run directory a run printed last ("run dir: <path>")."""
    return Path([line for line in output.splitlines() if line.startswith("run dir: ")][-1].removeprefix("run dir: "))


def wait_for_parts(root: Path, count: int, process: subprocess.Popen, pattern: str = "*") -> list[Path]:
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        found = sorted(root.glob(f"results/runs/*/*/cases/{pattern}.parquet"))
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no {count} part files in time: {process.communicate()[0] if process.poll() else ''}")


def writer_pids(run_dir: Path) -> dict[int, set[str]]:
    """pid of each part's writer (part-<ns>-<pid>-<n>.parquet) -> the samples it wrote."""
    out: dict[int, set[str]] = {}
    for part in (run_dir / "cases").glob("*.parquet"):
        out.setdefault(int(part.name.split("-")[2]), set()).update(pd.read_parquet(part).sample_id)
    return out


def assert_same_rows(frame: pd.DataFrame, reference: pd.DataFrame, atol: float = 2e-6) -> None:
    """Every row of ``reference`` in ``frame`` once, every metric equal within ``atol`` (inf == inf)."""
    assert frame.case_id.is_unique and sorted(frame.case_id) == sorted(reference.case_id)
    a, b = frame.set_index("case_id").sort_index(), reference.set_index("case_id").sort_index()
    for column in ("psnr", "ssim", "mse"):
        if column in b:
            np.testing.assert_allclose(a[column].to_numpy(float), b[column].to_numpy(float), rtol=0, atol=atol,
                                       err_msg=column)

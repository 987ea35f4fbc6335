"""attnedit-evaluate's outputs: the official per-image CSV, appended per batch, and its
``_meta.json`` (the settings every row of the CSV shares; a resume must match them)."""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from attnedit.data.piebench import PIEBench
from attnedit.errors import ConfigError
from attnedit.evaluate.config import method_folders
from attnedit.metrics.base import PairMetric
from attnedit.metrics.fidelity import SSIM
from attnedit.metrics.piebench import PIEBenchSSIM

#: What the CSV cells hold besides numbers (recorded in <stem>_meta.json).
CELLS = {
    "nan": "empty region: no pixel to score (the official script's token)",
    "": "not scored: the edited image holds NaN/inf pixels (nonfinite=nan); counted as failed in the summary",
}


class CsvLog:
    """The official per-image CSV, appended per batch and flushed to disk."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path, self.columns = path, columns
        self.done: set[str] = set()
        if path.is_file() and path.stat().st_size > 0:
            with path.open(newline="") as f:
                reader = csv.reader(f)
                header = next(reader, [])
                if header != columns:
                    raise ConfigError(
                        f"{path} holds columns {header}, this run writes {columns}; "
                        "choose another out= or delete the file to start over."
                    )
                self.done = {row[0] for row in reader if row}
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.append([columns])

    def append(self, rows: list[list[str]]) -> None:
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerows(rows)
            f.flush()
            os.fsync(f.fileno())


def format_value(value: float) -> str:
    """A cell as the official script's csv.writer writes it: repr of the float, "nan" for NaN."""
    return "nan" if math.isnan(value) else repr(float(value))


def meta_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}_meta.json")


def prepare_output(out: Path) -> None:
    """Make out's folder and prove files can be written there, before anything is computed."""
    folder = out.parent
    fix = "choose an out= path in a folder you can write to"
    blocker = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ConfigError(f"out={out}: {blocker} is a file, not a folder; {fix}.")
    if out.is_dir():
        raise ConfigError(f"out={out} is a folder; give the CSV file to write, e.g. out={out / 'scores.csv'}.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # The CSV, its _meta.json and the summaries all go to this folder: one probe file proves it.
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{out.stem}.", suffix=".probe"):
            pass
        if out.exists():
            out.open("a").close()
    except OSError as err:
        raise ConfigError(f"out={out}: cannot write in {folder} ({err.strerror or err}); {fix}.") from None


def check_meta(path: Path, meta: dict[str, Any], csv_path: Path) -> None:
    """Resuming must not mix rows scored under other settings (weights above all)."""
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            if not isinstance(old, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
            raise ConfigError(
                f"{path} is damaged ({err}); it records the settings of the rows in {csv_path}, which stay as they "
                f"are: if they were scored with this run's settings, delete {path.name} and rerun (only missing ids "
                "are scored); otherwise choose another out=."
            ) from None
        diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
        if diff:
            raise ConfigError(
                f"{path} records other settings for {diff} ({ {k: old.get(k) for k in diff} }); "
                "choose another out= or delete the csv and its _meta.json to start over."
            )
    # Written whole or not at all: a crash mid-write must not leave a truncated file.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, path)


def ssim_convention(cfg: Any, metrics: list[PairMetric]) -> str | None:
    """The SSIM convention of the run, None when it scores no SSIM (region or plain ``ssim``)."""
    return cfg.ssim_convention if any(isinstance(m, (PIEBenchSSIM, SSIM)) for m in metrics) else None


def run_settings(cfg: Any, dataset: PIEBench, metrics: list[PairMetric]) -> dict[str, Any]:
    """What the rows of one CSV must share: methods and their folders, metrics, weights, options."""
    options = OmegaConf.to_container(cfg)
    return {
        "edited": {name: str(folder.resolve()) for name, folder in method_folders(cfg).items()},
        "metrics": [m.name for m in metrics],
        "weights": {m.name: m.weights for m in metrics},
        "dataset_root": str(dataset.root.resolve()),
        **{k: options[k] for k in ("edited_size", "lpips_net", "clip_model", "dino_model", "dino_antialias")},
        "ssim_convention": ssim_convention(cfg, metrics),
        "nonfinite": cfg.nonfinite,
        "cells": CELLS,
    }

"""A run as the report reads it: its rows and manifest, loaded once and handed to every
table; and the names of runs in tables (the config keys in which they differ)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from attnedit.columns import METHOD
from attnedit.metrics.settings import check_uniform
from attnedit.report.scored_against import vs_columns
from attnedit.store.run_store import RunStore
from attnedit.store.signature import strip_keys


@dataclass(eq=False)
class Run:
    run_dir: Path
    frame: pd.DataFrame
    manifest: dict

    @property
    def method(self) -> str:
        if METHOD in self.frame and len(self.frame):
            return str(self.frame[METHOD].iloc[0])
        return str((self.manifest.get("method") or {}).get("name", self.run_dir.name))

    @property
    def metrics(self) -> list[str]:
        """The metric columns, in the config's order (the manifest's JSON is key-sorted)."""
        names = self.manifest.get("metric_order", self.manifest.get("metrics", {}))
        return [n for n in names if n in self.frame]

    @property
    def config(self) -> dict:
        return self.manifest.get("config") or {}


def load_run(run_dir: str | Path) -> Run:
    run_dir = Path(run_dir)
    store = RunStore.open(run_dir)
    run = Run(run_dir, store.read(), store.read_json("manifest.json"))
    # never one mean over values scored under different settings (nor against the other reference)
    check_uniform(run.frame, run.metrics + vs_columns(run.frame, run.metrics), run_dir)
    return run


def load_runs(run_dirs) -> list[Run]:
    """Runs from directories; Run objects pass through (already loaded)."""
    return [r if isinstance(r, Run) else load_run(r) for r in run_dirs]


def flat_config(config: dict, prefix: str = "") -> dict[str, object]:
    """{'method.position': 'before_norm', ...}; lists kept whole (str for comparison)."""
    out: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flat_config(value, name))
        else:
            out[name] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
    return out


def differing_keys(runs: list[Run]) -> list[str]:
    """Result config keys (signature.NON_RESULT_KEYS left out) whose values differ among runs."""
    flats = [flat_config(strip_keys(r.config)) for r in runs]
    keys = sorted(set().union(*flats)) if flats else []
    return [k for k in keys if len({repr(f.get(k)) for f in flats}) > 1]


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each dotted key by its last part ('position'), the full key where last parts collide."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def run_labels(runs: list[Run]) -> list[str]:
    """Method names; runs sharing a name are told apart by the config keys in which they
    differ ("sad (position=before_norm)"), never by a signature hash."""
    names = [r.method for r in runs]
    labels = []
    for i, (name, run) in enumerate(zip(names, runs)):
        positions = [j for j, n in enumerate(names) if n == name]
        same = [runs[j] for j in positions]
        if len(same) == 1:
            labels.append(name)
            continue
        keys = differing_keys(same)
        shown = short_keys(keys)
        values = flat_config(strip_keys(run.config))
        text = ", ".join(f"{shown[k]}={values.get(k)}" for k in keys)
        labels.append(f"{name} ({text or f'run {positions.index(i) + 1} of {len(same)}, same config'})")
    return labels

"""The results store: one directory per run signature, rows appended as parquet parts.

Each batch of finished cases is written as its own parquet file, created under a
dot-prefixed temporary name and renamed into place, so ``pandas.read_parquet(<run
dir>/cases)`` always reads every finished row and never a half-written file (pyarrow
skips names starting with '.' or '_'). Part names carry the process id and a counter,
so shards and parallel jobs writing one run directory never collide.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from attnedit.errors import DataError

# (method, position) of rows written before a rename -> the method's name now. Rows of
# "hspace_pca" that edited an attention input were PCA of attention-layer inputs
# (methods/attn_input_pca.py); "hspace_pca" now names the PCA of the mid-block output.
LEGACY_METHOD_NAMES = {
    ("hspace_pca", "after_norm"): "attn_input_pca",
    ("hspace_pca", "before_norm"): "attn_input_pca",
}


class RunStore:
    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.cases_dir = self.run_dir / "cases"
        self.images_dir = self.run_dir / "images"
        self.figures_dir = self.run_dir / "figures"
        self.tables_dir = self.run_dir / "tables"
        for folder in (self.cases_dir, self.images_dir, self.figures_dir, self.tables_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._parts_written = 0

    def part_files(self) -> list[Path]:
        return sorted(p for p in self.cases_dir.glob("*.parquet") if not p.name.startswith((".", "_")))

    def append(self, rows: list[dict[str, Any]]) -> Path:
        if not rows:
            raise ValueError("append() needs at least one row")
        self._parts_written += 1
        name = f"part-{time.time_ns()}-{os.getpid()}-{self._parts_written:05d}.parquet"
        tmp = self.cases_dir / f".{name}.tmp"
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        os.replace(tmp, self.cases_dir / name)
        return self.cases_dir / name

    def read(self, sample_id: str | None = None) -> pd.DataFrame:
        """All rows (or one sample's: parts whose statistics exclude it are skipped, not
        decoded), one per case id (a duplicate could only come from two processes racing
        on one case; the first written wins), in write order."""
        parts = self.part_files()
        if not parts:
            return pd.DataFrame()
        filters = None if sample_id is None else [("sample_id", "==", str(sample_id))]
        try:
            frames = [pq.read_table(p, filters=filters).to_pandas() for p in parts]
        except Exception as err:
            raise DataError(f"cannot read results in {self.cases_dir}: {err}") from err
        frame = pd.concat(frames, ignore_index=True)
        return current_method_names(frame.drop_duplicates("case_id", keep="first").reset_index(drop=True))

    def done_case_ids(self) -> set[str]:
        ids: set[str] = set()
        for part in self.part_files():
            ids.update(pq.read_table(part, columns=["case_id"]).column("case_id").to_pylist())
        return ids

    def write_json(self, name: str, payload: dict[str, Any]) -> Path:
        path = self.run_dir / name
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
        os.replace(tmp, path)
        return path

    def read_json(self, name: str) -> dict[str, Any]:
        path = self.run_dir / name
        if not path.exists():
            raise DataError(f"{path} does not exist: is {self.run_dir} a run directory made by attnedit-run?")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"{path} is not valid JSON ({err}); restore it or rerun attnedit-run") from err


def current_method_names(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of old run directories under their method's current name (LEGACY_METHOD_NAMES)."""
    if "method" not in frame or "position" not in frame:
        return frame
    renamed = [LEGACY_METHOD_NAMES.get((m, p), m) for m, p in zip(frame["method"], frame["position"])]
    return frame.assign(method=renamed)

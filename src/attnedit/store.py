"""The results store: one directory per run signature, rows appended as parquet parts.

Each batch of finished cases is written as its own parquet file, created under a
dot-prefixed temporary name and renamed into place, so ``pandas.read_parquet(<run
dir>/cases)`` always reads every finished row and never a half-written file (pyarrow
skips names starting with '.' or '_'). Part names carry the process id and a counter,
so shards and parallel jobs writing one run directory never collide.

Failed cases (attnedit.failures) are rows too. Parts holding only failed rows are named
``z-failed-...`` so they sort after every ``part-...``: pyarrow takes a directory's
schema from its first file, and a failed row lacks the columns a metric adds beside its
value (e.g. ``ssim_border``). Columns that hold only None in a part are written as
strings (``error`` of successful rows, ``image_path`` of failed ones), so every part's
types agree and ``pandas.read_parquet(<run dir>/cases)`` reads them all.
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
from attnedit.failures import BATCH_FAILURE, ERROR, FAILED, failed_mask, latest_failed_last

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
        if FAILED in rows[0]:
            self._add_failure_columns()
        prefix = "z-failed" if all(row.get(FAILED) for row in rows) else "part"
        name = f"{prefix}-{time.time_ns()}-{os.getpid()}-{self._parts_written:05d}.parquet"
        return self._write_part(pa.Table.from_pylist(rows), self.cases_dir / name)

    def _write_part(self, table: pa.Table, path: Path) -> Path:
        """Atomically: a dot-named temporary file renamed into place."""
        nulls = [i for i, f in enumerate(table.schema) if pa.types.is_null(f.type)]
        for i in nulls:
            table = table.set_column(i, table.schema[i].name, table.column(i).cast(pa.string()))
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, path)
        return path

    def _add_failure_columns(self) -> None:
        """A run made before failure accounting, resumed: its first part (whose schema pyarrow
        takes for the directory) gets ``failed=False`` and empty ``error``/``batch_failure``."""
        parts = self.part_files()
        if not parts or FAILED in pq.read_schema(parts[0]).names:
            return
        table = pq.read_table(parts[0])
        table = table.append_column(FAILED, pa.array([False] * table.num_rows))
        for name in (ERROR, BATCH_FAILURE):
            if name not in table.column_names:
                table = table.append_column(name, pa.array([None] * table.num_rows, pa.string()))
        self._write_part(table, parts[0])

    def drop_failed(self, case_ids: set[str], keep: Path | None = None) -> int:
        """Remove the failed rows of ``case_ids`` (their retries are stored): each part holding
        one is rewritten without it (atomically; a part left empty is deleted). Returns the
        number of rows removed (``keep``: a part left as it is, e.g. the one holding the
        retries). A kill part way leaves both rows, which ``read`` resolves."""
        removed = 0
        for part in self.part_files():
            if keep is not None and part == Path(keep):
                continue
            columns = pq.read_schema(part).names
            if FAILED not in columns:
                continue
            table = pq.read_table(part)
            flags = table.select(["case_id", FAILED]).to_pandas()
            drop = (flags[FAILED].fillna(False).astype(bool) & flags.case_id.isin(case_ids)).to_numpy()
            if not drop.any():
                continue
            removed += int(drop.sum())
            if drop.all():
                part.unlink()
            else:
                self._write_part(table.filter(pa.array(~drop)), part)
        return removed

    def read(self) -> pd.DataFrame:
        """All rows, one per case id, in write order. A case's successful row wins over its
        failed rows (a retry not yet followed by ``drop_failed``), the newest failed row over
        older ones; of two successful rows (two processes racing on one case) the first
        written wins."""
        parts = sorted(self.part_files(), key=_written_at)
        if not parts:
            return pd.DataFrame()
        try:
            frames = [pq.read_table(p).to_pandas() for p in parts]
        except Exception as err:
            raise DataError(f"cannot read results in {self.cases_dir}: {err}") from err
        frame = pd.concat(frames, ignore_index=True)
        return current_method_names(latest_failed_last(frame).reset_index(drop=True))

    def done_case_ids(self) -> set[str]:
        """Case ids with a successful row: failed cases are retried by a resume."""
        ids: set[str] = set()
        for part in self.part_files():
            columns = ["case_id", FAILED] if FAILED in pq.read_schema(part).names else ["case_id"]
            frame = pq.read_table(part, columns=columns).to_pandas()
            ids.update(frame.case_id[~failed_mask(frame)])
        return ids

    def failed_case_ids(self) -> set[str]:
        """Case ids whose rows are all failed (what a resume retries besides missing cases)."""
        frame = self.read()
        return set(frame.case_id[failed_mask(frame)]) if not frame.empty else set()

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


def _written_at(part: Path) -> tuple[int, str]:
    """Write order of a part: the time in its name (``<prefix>-<time_ns>-<pid>-<n>``)."""
    fields = part.stem.split("-")
    return (int(fields[-3]) if len(fields) >= 4 and fields[-3].isdigit() else 0), part.name


def current_method_names(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of old run directories under their method's current name (LEGACY_METHOD_NAMES)."""
    if "method" not in frame or "position" not in frame:
        return frame
    renamed = [LEGACY_METHOD_NAMES.get((m, p), m) for m, p in zip(frame["method"], frame["position"])]
    return frame.assign(method=renamed)

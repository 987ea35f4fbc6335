"""The results store: one directory per run signature, rows appended as parquet parts.

Each batch of finished cases is written as its own parquet file, created under a
dot-prefixed temporary name and renamed into place, so ``pandas.read_parquet(<run
dir>/cases)`` always reads every finished row and never a half-written file (pyarrow
skips names starting with '.' or '_'). Part names carry the process id and a counter,
so shards and parallel jobs writing one run directory never collide.

Failed cases (attnedit.run.failures) are rows too. Parts holding only failed rows are named
``z-failed-...`` so they sort after every ``part-...``: pyarrow takes a directory's
schema from its first file, and a failed row lacks the columns a metric adds beside its
value (e.g. ``ssim_border``). Columns that hold only None in a part are written as
strings (``error`` of successful rows, ``image_path`` of failed ones), so every part's
types agree and ``pandas.read_parquet(<run dir>/cases)`` reads them all.

A part that cannot be read (a disk full, a copy cut short) is moved to
``cases/quarantine/`` with one line saying so, and its cases count as not done, so the
next run recomputes them. Its name there starts with '_' because pyarrow's discovery
reads every file under ``cases/`` (subfolders too) except names starting with '.' or '_':
``pandas.read_parquet(<run dir>/cases)`` keeps working.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from attnedit.columns import BATCH_FAILURE, ERROR, FAILED, failed_mask
from attnedit.errors import DataError

# (method, position) of stored rows -> the method they are. Rows named "hspace_pca" that
# edited an attention input are PCA of attention-layer inputs (methods/attn_input_pca.py);
# "hspace_pca" itself is the PCA of the mid-block output, which edits no attention input.
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
        self._done: dict[str, set[str]] = {}  # part name -> its successful case ids (rewrites keep them)

    @classmethod
    def open(cls, run_dir: str | Path) -> "RunStore":
        """The store of an existing run directory; one error line when ``run_dir`` is none."""
        if not (Path(run_dir) / "manifest.json").exists():
            raise DataError(f"{run_dir} is not a run directory (no manifest.json); "
                            "give the path printed as 'run dir:' by attnedit-run")
        return cls(run_dir)

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
        path = self._write_part(pa.Table.from_pylist(rows), self.cases_dir / name)
        self._done[name] = {r["case_id"] for r in rows if r.get(FAILED) is not True}
        return path

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
        """A run whose parts have no failure columns, resumed: its first part (whose schema pyarrow
        takes for the directory) gets ``failed=False`` and empty ``error``/``batch_failure``."""
        parts = self.part_files()
        table = self._read_part(parts[0]) if parts else None
        if table is None or FAILED in table.column_names:
            return
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
            table = self._read_part(part)
            if table is None or FAILED not in table.column_names:
                continue
            flags = table.select(["case_id", FAILED]).to_pandas()
            drop = (failed_mask(flags) & flags.case_id.isin(case_ids)).to_numpy()
            if not drop.any():
                continue
            removed += int(drop.sum())
            if drop.all():
                part.unlink()
            else:
                self._write_part(table.filter(pa.array(~drop)), part)
        return removed

    def read(self, sample_id: str | None = None) -> pd.DataFrame:
        """All rows (or one sample's: parts whose statistics exclude it are skipped, not
        decoded), one per case id, in write order. A case's successful row wins over its
        failed rows (a retry not yet followed by ``drop_failed``), the newest failed row over
        older ones; of two successful rows (two processes racing on one case) the first
        written wins."""
        parts = sorted(self.part_files(), key=_written_at)
        if not parts:
            return pd.DataFrame()
        filters = None if sample_id is None else [("sample_id", "==", str(sample_id))]
        frames = [table.to_pandas() for table in (self._read_part(p, filters=filters) for p in parts)
                  if table is not None]
        if not frames:
            return pd.DataFrame()
        frame = pd.concat(frames, ignore_index=True)
        return current_method_names(latest_failed_last(frame).reset_index(drop=True))

    def done_case_ids(self) -> set[str]:
        """Case ids of the successful rows on disk (a row with ``failed`` True is to be
        retried). Parts read once are remembered: writers re-check often."""
        for part in self.part_files():
            if part.name not in self._done:
                table = self._read_part(part, columns=None)
                if table is None:
                    continue
                frame = table.select([c for c in ("case_id", FAILED) if c in table.column_names]).to_pandas()
                self._done[part.name] = set(frame.case_id[~failed_mask(frame)])
        present = {p.name for p in self.part_files()}
        return set().union(*(ids for name, ids in self._done.items() if name in present))

    def _read_part(self, part: Path, columns: list[str] | None = None, filters=None) -> pa.Table | None:
        """The part's table, or None after moving an unreadable part to quarantine."""
        try:
            return pq.read_table(part, columns=columns, filters=filters)
        except FileNotFoundError:
            return None  # another writer quarantined it a moment ago
        except (pa.ArrowException, OSError) as err:
            self.quarantine(part, err)
            return None

    def quarantine(self, part: Path, reason: Exception | str) -> None:
        folder = self.cases_dir / "quarantine"
        folder.mkdir(exist_ok=True)
        target = folder / f"_{part.name}"
        try:
            os.replace(part, target)
        except FileNotFoundError:
            return
        first = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
        print(f"attnedit: warning: unreadable part file {part} ({first}) moved to {target}; "
              "its cases will be recomputed by the next attnedit-run of this config", file=sys.stderr)

    def failed_case_ids(self) -> set[str]:
        """Case ids whose rows are all failed (what a resume retries besides missing cases);
        reads only the ``case_id`` and ``failed`` columns."""
        failed: set[str] = set()
        for part in self.part_files():
            try:
                names = pq.read_schema(part).names
            except FileNotFoundError:
                continue
            except (pa.ArrowException, OSError) as err:
                self.quarantine(part, err)
                continue
            table = self._read_part(part, columns=["case_id", FAILED]) if FAILED in names else None
            if table is not None:
                frame = table.to_pandas()
                failed.update(frame.case_id[failed_mask(frame)])
        return failed - self.done_case_ids()

    def write_json(self, name: str, payload: dict[str, Any]) -> Path:
        path = self.run_dir / name
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
        os.replace(tmp, path)
        return path

    def update_json(self, name: str, change) -> dict[str, Any]:
        """Read-modify-write of a JSON file under the run's lock (writers of one run
        directory must not lose each other's updates): ``change(current or None)``."""
        from attnedit.store.claims import locked

        with locked(self.run_dir, name):
            current = self.read_json(name) if (self.run_dir / name).exists() else None
            payload = change(current)
            self.write_json(name, payload)
        return payload

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
    """Rows under the name of the method they are (LEGACY_METHOD_NAMES)."""
    if "method" not in frame or "position" not in frame:
        return frame
    renamed = [LEGACY_METHOD_NAMES.get((m, p), m) for m, p in zip(frame["method"], frame["position"])]
    return frame.assign(method=renamed)


def latest_failed_last(frame: pd.DataFrame, keys: Sequence[str] = ("case_id",)) -> pd.DataFrame:
    """One row per case from rows in write order: the first successful row of a case, else
    its newest failed row (a retry supersedes the failure it retried)."""
    if frame.empty:
        return frame
    failed = failed_mask(frame)
    order = pd.Series(range(len(frame)), index=frame.index)
    # successful rows first in write order, then failed rows newest first
    rank = order.where(~failed, len(frame) + (len(frame) - order))
    picked = frame.assign(_rank=rank.to_numpy()).sort_values("_rank", kind="stable")
    picked = picked.drop_duplicates(list(keys), keep="first").sort_index()
    return picked.drop(columns="_rank")

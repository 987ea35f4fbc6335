"""GEdit-Bench (dataset ``stepfun-ai/GEdit-Bench``, split ``train``) from a local copy.

Protocol facts, read in stepfun-ai/Step1X-Edit @ 570eba6, folder GEdit-Bench/:

- Rows carry ``key``, ``task_type``, ``instruction``, ``instruction_language`` ("en" or
  "cn"), ``input_image``, ``input_image_raw`` and ``Intersection_exist``
  (generate_image_example.py lines 36-43).
- The task types, in the order every official script walks them: :data:`GROUPS`
  (test_gedit_score.py line 14-16, calculate_statistics.py lines 9-11).
- Which image is the source: the generator saves ``input_image`` as ``<key>_SRCIMG.png``
  (generate_image_example.py lines 48, 53) and the scorer reads that file as the source
  (test_gedit_score.py lines 25, 28, 33). The example's stand-in for an edit is
  ``input_image_raw`` resized to about 512x512 pixels (lines 45-46, 54): the
  editor's input size is the editor's business, the source it is judged against is
  ``input_image``. Here one image is both the editor's input and the metrics' source,
  so ``image_field`` defaults to ``input_image``; ``input_image_raw`` is the other choice.
- Edits are saved as ``<save>/fullset/<task_type>/<instruction_language>/<key>.png``
  (generate_image_example.py line 49) at the model's output size, and the scorer resizes
  the edited image to the source's size (PIL's default filter) before judging
  (test_gedit_score.py line 34). Runs save edits the same way: PNG (the runner's default
  format) at the model's size (``saved_size=output``), resized to the source's size when
  scored (attnedit.run.saved_edits: bicubic with antialiasing, as attnedit-evaluate).
- Language: the statistics script takes ``--language en|zh`` (calculate_statistics.py
  line 130) and keeps rows whose ``instruction_language`` equals it (line 51), while the
  data says "cn": ``--language zh`` there keeps no row. Here ``language=zh`` is read as
  the data's "cn" (both recorded by :meth:`GEditBench.describe`).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from attnedit.data.base import DecodedImages, Sample, check_first_n, check_saved_size
from attnedit.errors import ConfigError, DataError

HUB_ID = "stepfun-ai/GEdit-Bench"
DOWNLOAD = f"huggingface-cli download {HUB_ID} --repo-type dataset --local-dir <dir>"

#: The 11 task types in the official order (test_gedit_score.py line 15).
GROUPS = (
    "background_change", "color_alter", "material_alter", "motion_change", "ps_human", "style_change",
    "subject-add", "subject-remove", "subject-replace", "text_change", "tone_transfer",
)
#: config value -> the data's ``instruction_language`` ("zh": the statistics script's name for "cn").
LANGUAGES = {"en": "en", "cn": "cn", "zh": "cn"}
IMAGE_FIELDS = ("input_image", "input_image_raw")
META_FIELDS = ("key", "task_type", "instruction", "instruction_language", "Intersection_exist")


def read_copy(root: Path) -> tuple[Any, str]:
    """The ``train`` split of a local copy and its kind: a ``save_to_disk`` folder
    ("save_to_disk"), else the parquet files of a hub snapshot ("parquet")."""
    import datasets

    fix = f"dataset.root must be a local copy of {HUB_ID} (download: {DOWNLOAD}, or a save_to_disk folder)"
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise DataError(f"GEdit-Bench: dataset.root={root} {what}; {fix}.")
    quiet = not datasets.are_progress_bars_disabled()
    if quiet:
        datasets.disable_progress_bars()
    try:
        if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
            loaded, kind = datasets.load_from_disk(str(root)), "save_to_disk"
            if isinstance(loaded, datasets.DatasetDict):
                if "train" not in loaded:
                    raise DataError(f"GEdit-Bench: {root} holds the splits {sorted(loaded)}, not 'train'; {fix}.")
                loaded = loaded["train"]
            return loaded, kind
        files = sorted(p for p in root.rglob("*.parquet")
                       if not any(part.startswith(".") for part in p.relative_to(root).parts))
        if not files:
            raise DataError(f"GEdit-Bench: {root} holds neither a save_to_disk dataset nor parquet files; {fix}.")
        train = [p for p in files if p.name.startswith("train")] or files  # the hub's data/train-*.parquet
        return datasets.load_dataset("parquet", data_files=[str(p) for p in train], split="train"), "parquet"
    except DataError:
        raise
    except Exception as err:  # whatever datasets/pyarrow raise on a broken copy is a data problem
        raise DataError(f"GEdit-Bench: cannot read {root} ({type(err).__name__}: {err}); {fix}.") from err
    finally:
        if quiet:
            datasets.enable_progress_bars()


def decode_rgb(data: dict[str, Any], where: str) -> np.ndarray:
    """An ``Image`` cell read undecoded ({"bytes", "path"}) as uint8 3xHxW, converted to RGB."""
    source = io.BytesIO(data["bytes"]) if data.get("bytes") is not None else data.get("path")
    if source is None:
        raise DataError(f"{where} holds no image; re-download the dataset.")
    try:
        with Image.open(source) as img:
            array = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{where}: cannot decode the image ({err}); re-download the dataset.") from err
    return np.ascontiguousarray(array.transpose(2, 0, 1))


class GEditBench(DecodedImages):
    """GEdit-Bench rows of one instruction language, in the dataset's row order.

    Selection: ``language`` (en | cn | zh = cn), ``task_types`` (null: all of
    :data:`GROUPS`), ``intersection_only`` (rows with ``Intersection_exist`` true, the
    statistics script's intersection subset), then the first ``first_n``. Sample: id =
    ``key``, category = ``task_type``, image = ``image_field`` as float 3xHxW in [0, 1];
    fields ``instruction``, ``task_type``, ``instruction_language`` (the data's value),
    ``intersection_exist`` (bool), ``key``.
    """

    name = "gedit_bench"
    #: Sample fields every row carries: the official statistics select on them (intersection subset, language)
    row_fields = ("intersection_exist", "instruction_language", "instruction")

    def __init__(
        self,
        root: str | Path,
        language: str = "en",
        task_types: Iterable[str] | None = None,
        intersection_only: bool = False,
        first_n: int | None = None,
        image_field: str = "input_image",
        saved_size: str = "output",
    ) -> None:
        if str(language) not in LANGUAGES:
            raise ConfigError(f"GEdit-Bench: language={language!r} is not one of {sorted(LANGUAGES)} "
                              "(zh = the data's cn).")
        if image_field not in IMAGE_FIELDS:
            raise ConfigError(f"GEdit-Bench: image_field={image_field!r} is not one of {IMAGE_FIELDS}.")
        check_saved_size("GEdit-Bench", saved_size, "the model's own size, resized when scored, as the official scorer")
        self.task_types = None if task_types is None else [str(t) for t in task_types]
        unknown = [t for t in self.task_types or [] if t not in GROUPS]
        if unknown:
            raise ConfigError(f"GEdit-Bench: unknown task_types {unknown}; choose from {list(GROUPS)}.")
        self.root = Path(root).expanduser()
        self.language_requested, self.language = str(language), LANGUAGES[str(language)]
        self.intersection_only, self.image_field, self.saved_size = bool(intersection_only), image_field, saved_size
        self.first_n = check_first_n("GEdit-Bench", first_n)
        table, self.source_format = read_copy(self.root)
        missing = [c for c in (*META_FIELDS, image_field) if c not in table.column_names]
        if missing:
            raise DataError(f"GEdit-Bench: {self.root} lacks the columns {missing} (it has {table.column_names}); "
                            f"dataset.root must be a copy of {HUB_ID} ({DOWNLOAD}).")
        self._rows = self._select(table.select_columns(list(META_FIELDS)).to_dict())
        self._images = table.select_columns([image_field]).cast_column(image_field, _undecoded())

    def _select(self, meta: dict[str, list]) -> dict[str, tuple[int, dict[str, Any]]]:
        """key -> (row index, row) of the selection, in row order."""
        wanted = set(self.task_types or GROUPS)
        rows: dict[str, tuple[int, dict[str, Any]]] = {}
        for index in range(len(meta["key"])):
            row = {name: meta[name][index] for name in META_FIELDS}
            if row["instruction_language"] != self.language or row["task_type"] not in wanted:
                continue
            flag = row["Intersection_exist"]
            if not isinstance(flag, (bool, np.bool_)):
                raise DataError(f"GEdit-Bench row {index} (key {row['key']!r}) in {self.root}: Intersection_exist is "
                                f"{flag!r}, not true/false; re-download the dataset.")
            if self.intersection_only and not flag:
                continue
            key = str(row["key"])
            if key in rows:
                raise DataError(f"GEdit-Bench: key {key!r} appears twice for language {self.language} in {self.root} "
                                f"(rows {rows[key][0]} and {index}); ids must be unique, re-download the dataset.")
            rows[key] = (index, row)
            if self.first_n is not None and len(rows) == self.first_n:
                break
        return rows

    def sample_ids(self) -> list[str]:
        return list(self._rows)

    def row(self, sample_id: str) -> dict[str, Any]:
        """The metadata row of one selected key."""
        if sample_id not in self._rows:
            raise DataError(f"GEdit-Bench: key {sample_id!r} is not among the selected rows of {self.root} "
                            f"(language {self.language}).")
        return self._rows[sample_id][1]

    def load_uint8(self, sample_id: str) -> Sample:
        """:meth:`load` with the image left as uint8 3xHxW."""
        row = self.row(sample_id)
        index = self._rows[sample_id][0]
        where = f"GEdit-Bench key {sample_id!r} (row {index} of {self.root}), {self.image_field}"
        image = torch.from_numpy(decode_rgb(self._images[index][self.image_field] or {}, where))
        return Sample(
            id=sample_id,
            image=image,
            path=None,  # the image is a cell of the dataset, not a file
            category=row["task_type"],
            fields={
                "instruction": row["instruction"],
                "task_type": row["task_type"],
                "instruction_language": row["instruction_language"],
                "intersection_exist": bool(row["Intersection_exist"]),
                "key": sample_id,
            },
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "root": str(self.root),
            "source_format": self.source_format,
            "language": self.language,
            "language_requested": self.language_requested,
            "task_types": self.task_types,
            "intersection_only": self.intersection_only,
            "first_n": self.first_n,
            "image_field": self.image_field,
            "num_samples": len(self._rows),
            "edited_format": "png",
            "saved_size": self.saved_size,
        }


def _undecoded():
    import datasets

    return datasets.Image(decode=False)

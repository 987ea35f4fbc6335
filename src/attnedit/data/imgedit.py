"""ImgEdit-Basic in its official layout: ``basic_edit.json`` (``{key: {id, prompt,
edit_type}}``) and the source images of the dataset's ``Benchmark.tar``.

Protocol facts, read in PKU-YuanGroup/ImgEdit @ 547185d, Benchmark/Basic/:

- The source of item ``key`` is ``os.path.join(origin_img_root, item["id"])``, its edit
  ``os.path.join(result_img_folder, f"{key}.png")``, its instruction ``item["prompt"]``
  and its rubric ``prompts[item["edit_type"]]`` (basic_bench.py lines 57-62, 36). The
  official script sends the two files unchanged, the edit at the model's output size
  (lines 25-26, 46-47); runs save edits as PNG at the model's size (``saved_size=output``,
  the official layout) and resize them to the source's size before any metric or judge
  sees them, as for every benchmark (recorded in the judge stack).
- basic_edit.json holds 737 items in the 9 types of :data:`EDIT_TYPES` (counts:
  :data:`TYPE_COUNTS`), keys numbers in no order; prompts.json has one rubric per type,
  in the order of :data:`EDIT_TYPES`.
- Commit b3eb8e7 ("update", 2025-06-16) relabelled the 94 items typed ``alter`` to
  ``adjust`` (and rewrote 57 prompts); ``alter`` has no rubric in prompts.json at any
  commit, so basic_bench.py line 36 fails on those items. ``alter="adjust"`` (default)
  reads an ``alter`` item of an older copy as ``adjust`` and records the label read in
  the field ``edit_type_source``; ``alter="error"`` refuses such a file.
- Images root: ``Benchmark.tar`` unpacks to ``Benchmark/singleturn/<category>/...``; with
  ``images_root: null`` the images are looked for in ``<root>/Benchmark/singleturn``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from attnedit.data.base import DecodedImages, Sample, check_first_n, check_saved_size
from attnedit.errors import ConfigError, DataError

FILE = "basic_edit.json"
#: The 9 edit types, in the order of the rubric file (prompts.json @ 547185d).
EDIT_TYPES = ("replace", "add", "adjust", "remove", "style", "action", "extract", "background", "compose")
#: Items per type in basic_edit.json @ 547185d (737 in all).
TYPE_COUNTS = {"extract": 117, "style": 100, "add": 95, "adjust": 94, "background": 94, "replace": 92,
               "remove": 86, "action": 36, "compose": 23}
LEGACY_ALTER = "alter"  # the label of the adjust items before b3eb8e7
ALTER_MODES = ("adjust", "error")
IMAGES_DEFAULT = Path("Benchmark") / "singleturn"
JSON_URL = ("https://raw.githubusercontent.com/PKU-YuanGroup/ImgEdit/b3eb8e74d7cd1fd0ce5341eaf9254744a8ab4c0b/"
            "Benchmark/Basic/basic_edit.json")
IMAGES_DOWNLOAD = "huggingface-cli download sysuyy/ImgEdit Benchmark.tar --repo-type dataset --local-dir <root>"


def load_edits(path: Path) -> dict[str, dict[str, Any]]:
    """basic_edit.json as {key: item}, every item checked to hold id, prompt and edit_type."""
    fix = f"dataset.root must be the folder holding {FILE} (download: {JSON_URL})"
    if not path.is_file():
        raise DataError(f"ImgEdit-Basic: {path} not found; {fix}.")
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"ImgEdit-Basic: {path} is not valid JSON ({err}); {fix}.") from err
    if not isinstance(items, dict) or not items:
        raise DataError(f"ImgEdit-Basic: {path} must be a non-empty JSON object of key -> item; {fix}.")
    for key, item in items.items():
        if not key.isdigit():
            raise DataError(f"ImgEdit-Basic: key {key!r} in {path} is not a number; {fix}.")
        bad = [f for f in ("id", "prompt", "edit_type")
               if not isinstance(item, dict) or not isinstance(item.get(f), str)]
        if bad:
            raise DataError(f"ImgEdit-Basic item {key} in {path}: {bad} missing or not text; every item needs "
                            f"id, prompt and edit_type; {fix}.")
    return items


def read_rgb(path: Path, key: str) -> np.ndarray:
    """The source image as uint8 3xHxW, converted to RGB."""
    try:
        with Image.open(path) as img:
            array = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"ImgEdit-Basic item {key}: image {path} is missing; check dataset.images_root "
                        f"(unpack Benchmark.tar: {IMAGES_DOWNLOAD}).") from None
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"ImgEdit-Basic item {key}: cannot read image {path} ({err}); replace the file.") from err
    return np.ascontiguousarray(array.transpose(2, 0, 1))


class ImgEditBasic(DecodedImages):
    """The ImgEdit-Basic items, keys in numeric order.

    Selection: ``edit_types`` (null: all 9), then the first ``first_n``. Sample: id = key,
    category = edit type, image = the source as float 3xHxW in [0, 1]; fields
    ``instruction`` (the item's prompt), ``edit_type``, ``edit_type_source`` (the label in
    the file: ``alter`` for an older copy's adjust items), ``image_id`` (the item's id,
    the path under the images root).
    """

    name = "imgedit_basic"

    def __init__(
        self,
        root: str | Path,
        images_root: str | Path | None = None,
        edit_types: Iterable[str] | None = None,
        first_n: int | None = None,
        alter: str = "adjust",
        saved_size: str = "output",
    ) -> None:
        if alter not in ALTER_MODES:
            raise ConfigError(f"ImgEdit-Basic: alter={alter!r} is not one of {ALTER_MODES} (adjust: read items "
                              f"labelled {LEGACY_ALTER!r} as adjust; error: refuse such a {FILE}).")
        check_saved_size("ImgEdit-Basic", saved_size, "the model's own size, as the official layout saves it")
        self.edit_types = None if edit_types is None else [str(t) for t in edit_types]
        unknown = [t for t in self.edit_types or [] if t not in EDIT_TYPES]
        if unknown:
            hint = f" ({LEGACY_ALTER!r} items are read as 'adjust')" if LEGACY_ALTER in unknown else ""
            raise ConfigError(f"ImgEdit-Basic: unknown edit_types {unknown}{hint}; choose from {list(EDIT_TYPES)}.")
        self.root = Path(root).expanduser()
        self.file = self.root / FILE
        self.alter, self.saved_size = alter, saved_size
        self.first_n = check_first_n("ImgEdit-Basic", first_n)
        self.items = load_edits(self.file)
        self.images_root = (self.root / IMAGES_DEFAULT if images_root is None else Path(images_root).expanduser())
        if not self.images_root.is_dir():
            key = (f"dataset.images_root={images_root}" if images_root is not None
                   else f"{self.root / IMAGES_DEFAULT} (images_root: null)")
            raise DataError(f"ImgEdit-Basic: {key} is not a folder of the benchmark's images; unpack Benchmark.tar "
                            f"({IMAGES_DOWNLOAD}, then tar -xf Benchmark.tar -C <root>) or set dataset.images_root.")
        self.legacy = sorted((k for k, v in self.items.items() if v["edit_type"] == LEGACY_ALTER), key=int)
        if self.legacy and alter == "error":
            raise DataError(f"ImgEdit-Basic: {self.file} labels {len(self.legacy)} items (e.g. {self.legacy[0]}) "
                            f"{LEGACY_ALTER!r}, the type without a rubric that later copies call 'adjust'; download "
                            f"the current file ({JSON_URL}) or pass dataset.alter=adjust.")
        for key, item in self.items.items():
            if item["edit_type"] not in EDIT_TYPES and item["edit_type"] != LEGACY_ALTER:
                raise DataError(f"ImgEdit-Basic item {key} in {self.file}: edit_type {item['edit_type']!r} is not one "
                                f"of {list(EDIT_TYPES)}; download the current file ({JSON_URL}).")
        wanted = set(self.edit_types or EDIT_TYPES)
        chosen = [k for k in sorted(self.items, key=int) if self.edit_type(k) in wanted]
        self._ids = chosen if self.first_n is None else chosen[: self.first_n]

    def edit_type(self, key: str) -> str:
        """The item's edit type, ``alter`` read as ``adjust``."""
        label = self.items[key]["edit_type"]
        return "adjust" if label == LEGACY_ALTER else label

    def sample_ids(self) -> list[str]:
        return list(self._ids)

    def image_file(self, sample_id: str) -> Path:
        """Where the official script reads the source (basic_bench.py line 60)."""
        if sample_id not in self.items:
            raise DataError(f"ImgEdit-Basic: key {sample_id!r} is not in {self.file}.")
        return self.images_root / self.items[sample_id]["id"]

    def load_uint8(self, sample_id: str) -> Sample:
        """:meth:`load` with the image left as uint8 3xHxW."""
        path = self.image_file(sample_id)
        item = self.items[sample_id]
        edit_type = self.edit_type(sample_id)
        return Sample(
            id=sample_id,
            image=torch.from_numpy(read_rgb(path, sample_id)),
            path=str(path),
            category=edit_type,
            fields={
                "instruction": item["prompt"],
                "edit_type": edit_type,
                "edit_type_source": item["edit_type"],
                "image_id": item["id"],
            },
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "root": str(self.root),
            "images_root": str(self.images_root),
            "edit_types": self.edit_types,
            "first_n": self.first_n,
            "alter": self.alter,
            "alter_items": len(self.legacy),  # items read as adjust from the label alter
            "num_samples": len(self._ids),
            "edited_format": "png",
            "saved_size": self.saved_size,
        }

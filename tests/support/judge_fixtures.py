"""Tiny fake copies of GEdit-Bench and ImgEdit-Basic in their official layouts, with
invented instructions, and writers of "someone else's edits" in the layouts the official
scorers read. Paths are spelled out here (f-strings of the official layouts), never taken
from attnedit, so a test comparing attnedit's paths with these can fail.

GEdit-Bench: a ``datasets`` table with the dataset's columns (key, task_type, instruction,
instruction_language, input_image, input_image_raw, Intersection_exist), saved with
``save_to_disk`` or as a hub snapshot's ``data/train-00000-of-00001.parquet``; every key
appears once per language, rows in a shuffled (fixed) order. Edits: ``<save>/fullset/
<task_type>/<language>/<key>.png`` and the source as ``<key>_SRCIMG.png``.
ImgEdit-Basic: ``<root>/basic_edit.json`` ({key: {id, prompt, edit_type}}, keys numbers
in no order) and JPEGs under ``<root>/Benchmark/singleturn/<category>/``. Edits:
``<folder>/<key>.png``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

GEDIT_GROUPS = (
    "background_change", "color_alter", "material_alter", "motion_change", "ps_human", "style_change",
    "subject-add", "subject-remove", "subject-replace", "text_change", "tone_transfer",
)
IMGEDIT_TYPES = ("replace", "add", "adjust", "remove", "style", "action", "extract", "background", "compose")
# Made-up instruction templates (the real ones are never copied into tests).
_VERBS = {"en": "Please make edit {n} of kind {task} to the picture", "cn": "编辑 {n} 号 {task}"}


@dataclass
class GEditCopy:
    root: Path
    layout: str  # "save_to_disk" | "save_to_disk_dict" | "parquet"
    rows: list[dict] = field(default_factory=list)  # in the table's row order; images as uint8 HxWx3


@dataclass
class ImgEditCopy:
    root: Path
    images_root: Path
    items: dict[str, dict]  # basic_edit.json as written
    pixels: dict[str, np.ndarray] = field(default_factory=dict)  # image id -> decoded uint8 HxWx3


def _pattern(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Two colour gradients plus noise: distinct per image, recognisable after JPEG."""
    corner, right, down = rng.integers(0, 256, (3, 3)).astype(np.float64)
    yy, xx = np.mgrid[:height, :width]
    base = corner + (right - corner) * (xx / width)[..., None] + (down - corner) * (yy / height)[..., None] / 2
    return np.clip(base + rng.integers(-12, 13, (height, width, 3)), 0, 255).astype(np.uint8)


def gedit_key(task_type: str, index: int) -> str:
    """A made-up key: hex, like an opaque hash."""
    return hashlib.sha1(f"{task_type}/{index}".encode()).hexdigest()[:16]


def build_gedit_copy(tmp: Path, n_per_type: int = 2, task_types: Iterable[str] = GEDIT_GROUPS,
                     languages: Iterable[str] = ("en", "cn"), layout: str = "save_to_disk",
                     size: tuple[int, int] = (12, 16), raw_size: tuple[int, int] = (20, 28),
                     seed: int = 0, intersection_every: int = 2) -> GEditCopy:
    """A fake GEdit-Bench under ``tmp`` (``layout``: save_to_disk, save_to_disk_dict (a
    DatasetDict with split train) or parquet (the hub snapshot's data/train-*.parquet)).
    Item i of a type has ``Intersection_exist`` true when i % intersection_every == 0;
    sizes are (height, width) of input_image and input_image_raw."""
    import datasets

    rng = np.random.default_rng(seed)
    rows = []
    for task in task_types:
        for i in range(n_per_type):
            key = gedit_key(task, i)
            source, raw = _pattern(rng, *size), _pattern(rng, *raw_size)
            for language in languages:
                rows.append({"task_type": task, "key": key,
                             "instruction": _VERBS[language].format(n=i, task=task),
                             "instruction_language": language, "input_image": source,
                             "input_image_raw": raw, "Intersection_exist": i % intersection_every == 0})
    rows = [rows[j] for j in rng.permutation(len(rows))]
    features = datasets.Features({
        "task_type": datasets.Value("string"), "key": datasets.Value("string"),
        "instruction": datasets.Value("string"), "instruction_language": datasets.Value("string"),
        "input_image": datasets.Image(), "input_image_raw": datasets.Image(),
        "Intersection_exist": datasets.Value("bool"),
    })
    columns = {name: [row[name] for row in rows] for name in features}
    for name in ("input_image", "input_image_raw"):
        columns[name] = [Image.fromarray(a) for a in columns[name]]
    table = datasets.Dataset.from_dict(columns, features=features)
    root = Path(tmp)
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        if layout == "save_to_disk":
            table.save_to_disk(str(root))
        elif layout == "save_to_disk_dict":
            datasets.DatasetDict({"train": table}).save_to_disk(str(root))
        elif layout == "parquet":
            (root / "data").mkdir(parents=True, exist_ok=True)
            table.to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
        else:
            raise ValueError(f"layout={layout!r}")
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()
    return GEditCopy(root, layout, rows)


def write_gedit_edits(save: Path, rows: Iterable[dict], make_edit: Callable[[dict], np.ndarray] | None = None,
                      skip: Iterable[str] = (), with_source: bool = True) -> dict[tuple[str, str], Path]:
    """Someone else's GEdit-Bench edits as the official generator writes them:
    ``<save>/fullset/<task_type>/<language>/<key>.png`` and (``with_source``) ``input_image``
    as ``<key>_SRCIMG.png``. ``make_edit(row)`` gives the edit (uint8 HxWx3; default: the
    source inverted, at twice its size); keys in ``skip`` get no edit.
    Returns {(key, language): edit path}."""
    skip = set(skip)
    written = {}
    for row in rows:
        folder = Path(save) / "fullset" / row["task_type"] / row["instruction_language"]
        folder.mkdir(parents=True, exist_ok=True)
        if with_source:
            Image.fromarray(row["input_image"]).save(folder / f"{row['key']}_SRCIMG.png")
        if row["key"] in skip:
            continue
        edit = make_edit(row) if make_edit else np.kron(255 - row["input_image"], np.ones((2, 2, 1), np.uint8))
        Image.fromarray(edit).save(folder / f"{row['key']}.png")
        written[(row["key"], row["instruction_language"])] = folder / f"{row['key']}.png"
    return written


def build_imgedit_copy(tmp: Path, n_per_type: int = 2, edit_types: Iterable[str] = IMGEDIT_TYPES,
                       legacy_alter: bool = False, size: tuple[int, int] = (12, 16), seed: int = 0,
                       images_under: str = "Benchmark/singleturn") -> ImgEditCopy:
    """A fake ImgEdit-Basic under ``tmp``: basic_edit.json with ``n_per_type`` items per type
    (``legacy_alter``: the adjust items labelled ``alter``, as before the relabel), tiny
    JPEGs under ``<tmp>/<images_under>/<category>/``; one image is shared by two items and one
    lies two folders deep, as in the real file."""
    rng = np.random.default_rng(seed)
    root = Path(tmp)
    images_root = root / images_under
    edit_types = tuple(edit_types)
    # keys of 1-3 digits, shuffled: numeric order is not text order, nor the file's order
    keys = rng.permutation(np.arange(1, 1 + 9 * n_per_type * 7))[: len(edit_types) * n_per_type]
    items, pixels = {}, {}
    for j, (edit_type, i) in enumerate((t, i) for t in edit_types for i in range(n_per_type)):
        category = ("animal", "daily object", "style")[j % 3]
        image_id = f"{category}/{j:09d}.jpg" if j != 1 else f"{category}/nested/{j:09d}.jpg"
        if j == 2:
            image_id = items[str(keys[0])]["id"]  # an image edited twice
        if image_id not in pixels:
            path = images_root / image_id
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_pattern(rng, *size)).save(path, format="JPEG", quality=90)
            with Image.open(path) as img:
                pixels[image_id] = np.asarray(img.convert("RGB"))
        label = "alter" if legacy_alter and edit_type == "adjust" else edit_type
        items[str(keys[j])] = {"id": image_id, "prompt": f"Invented instruction {j}: do a {edit_type} edit",
                               "edit_type": label}
    root.mkdir(parents=True, exist_ok=True)
    (root / "basic_edit.json").write_text(json.dumps(items, indent=4, ensure_ascii=False), encoding="utf-8")
    return ImgEditCopy(root, images_root, items, pixels)


def write_imgedit_edits(folder: Path, copy: ImgEditCopy, make_edit: Callable[[str, dict], np.ndarray] | None = None,
                        skip: Iterable[str] = ()) -> dict[str, Path]:
    """Someone else's ImgEdit-Basic edits as basic_bench.py reads them: ``<folder>/<key>.png``.
    ``make_edit(key, item)`` gives the edit (uint8 HxWx3; default: the source inverted, at
    twice its size); keys in ``skip`` get no file. Returns {key: path}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written, skip = {}, set(skip)
    for key, item in copy.items.items():
        if key in skip:
            continue
        source = copy.pixels[item["id"]]
        edit = make_edit(key, item) if make_edit else np.kron(255 - source, np.ones((2, 2, 1), np.uint8))
        Image.fromarray(edit).save(folder / f"{key}.png")
        written[key] = folder / f"{key}.png"
    return written

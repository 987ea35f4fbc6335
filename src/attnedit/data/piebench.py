"""PIE-Bench in its official layout: ``<root>/mapping_file.json`` and
``<root>/annotation_images/<image_path>`` (see reference/piebench.md).

Masks are run-length encoded over the image flattened row by row. The official
PnPInversion decoder (``mask_decode``) loops over every pixel; :func:`decode_rle_mask`
gives the same masks with array operations: each (start, length) run sets
``min(length, H*W - start)`` pixels from ``start`` (so a run past the end is clipped and
a start beyond the end sets nothing), then the whole one-pixel border is set to 1.
The official script always decodes at 512x512, the size of every PIE-Bench image; here
the mask is decoded at the size of the entry's source image, which is the same thing
for the real data and lets test fixtures use small images.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from attnedit.data.base import Dataset, Sample, check_first_n, check_saved_size
from attnedit.errors import ConfigError, DataError

CATEGORY_NAMES: dict[str, str] = {
    "0": "random editing",
    "1": "change object",
    "2": "add object",
    "3": "delete object",
    "4": "change attribute: content",
    "5": "change attribute: pose",
    "6": "change attribute: color",
    "7": "change attribute: material",
    "8": "change background",
    "9": "change style",
}

REQUIRED_KEYS = (
    "image_path",
    "original_prompt",
    "editing_prompt",
    "editing_instruction",
    "editing_type_id",
    "blended_word",
    "mask",
)


class RLEClippedWarning(UserWarning):
    """An RLE run reaches past the end of the image; it was clipped like the official decoder does."""


def strip_brackets(text: str) -> str:
    """The official script removes the [ ] marking edited words before any text model sees them."""
    return text.replace("[", "").replace("]", "")


def check_rle(rle: Any, entry_id: str = "?") -> np.ndarray:
    """Validate an RLE list: integers, even length, none negative. Returns an int64 array."""
    fix = "re-extract mapping_file.json from the PIE-Bench archive"
    if not isinstance(rle, (list, tuple)):
        raise DataError(
            f"PIE-Bench entry {entry_id}: 'mask' must be a list [start, length, ...], "
            f"got {type(rle).__name__}; {fix}."
        )
    # set(map(type, ...)) runs in C: the per-value test below only for lists not all plain ints (JSON's).
    if not set(map(type, rle)) <= {int} and any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in rle):
        raise DataError(f"PIE-Bench entry {entry_id}: 'mask' must hold integers only; {fix}.")
    if len(rle) % 2:
        raise DataError(
            f"PIE-Bench entry {entry_id}: 'mask' has odd length {len(rle)}; it must be (start, length) pairs; {fix}."
        )
    runs = np.asarray(rle, dtype=np.int64).reshape(-1, 2)
    if (runs < 0).any():
        raise DataError(f"PIE-Bench entry {entry_id}: 'mask' holds a negative start or length; {fix}.")
    return runs


def decode_rle_mask(
    rle: list[int], height: int = 512, width: int = 512, entry_id: str = "?", dtype: type = np.float32
) -> torch.Tensor:
    """Decode a PIE-Bench RLE mask into an HxW tensor of ``dtype`` (1 = region to edit).

    Equal to the official ``mask_decode`` (border set to 1 included). Runs reaching past
    the image are clipped as the official loop clips them, with an RLEClippedWarning
    naming ``entry_id``.
    """
    runs = check_rle(rle.tolist() if isinstance(rle, np.ndarray) else rle, entry_id)
    return decode_runs(runs, height, width, entry_id, dtype)


def decode_runs(runs: np.ndarray, height: int, width: int, entry_id: str, dtype: type = np.float32) -> torch.Tensor:
    """:func:`decode_rle_mask` of RLE pairs already checked by :func:`check_rle`."""
    total = height * width
    starts, lengths = runs[:, 0], runs[:, 1]
    if (starts + lengths > total).any():
        warnings.warn(
            f"PIE-Bench entry {entry_id}: an RLE run reaches past the {height}x{width} image; "
            "clipped as the official decoder does (the mask may be for another image size).",
            RLEClippedWarning,
            stacklevel=3,  # the caller of decode_rle_mask / load_uint8
        )
    lengths = np.clip(np.minimum(lengths, total - starts), 0, None)
    keep = lengths > 0
    starts, ends = starts[keep], starts[keep] + lengths[keep]
    # Coverage count via a difference array: +1 at each start, -1 after each end.
    delta = np.zeros(total + 1, dtype=np.int64)
    np.add.at(delta, starts, 1)
    np.add.at(delta, ends, -1)
    mask = (np.cumsum(delta[:total]) > 0).reshape(height, width).astype(dtype)
    mask[0, :] = mask[-1, :] = 1  # the official decoder marks the border as edit region
    mask[:, 0] = mask[:, -1] = 1
    return torch.from_numpy(mask)


class NonFinitePixelsError(DataError):
    """An image file holds NaN or infinite values (a float image, e.g. a 32-bit TIFF)."""

    def __init__(self, path: Path, entry_id: str, nan: int, inf: int, fix: str = "re-save it from finite values") -> None:
        self.path, self.entry_id, self.nan, self.inf = path, entry_id, nan, inf
        super().__init__(
            f"PIE-Bench entry {entry_id}: image {path} holds {nan} NaN and {inf} infinite pixel values, "
            f"which have no 8-bit equivalent; {fix}."
        )


def read_rgb_uint8(path: Path, entry_id: str) -> np.ndarray:
    """A file as a uint8 3xHxW array (C-contiguous), as the official script reads it (PIL, RGB).

    Float images (PIL mode "F": 32-bit TIFF) are checked first: PIL's conversion to 8 bits
    would turn NaN into 0 and inf into 255, i.e. score a broken image as a real one."""
    try:
        with Image.open(path) as img:
            if img.mode == "F":
                values = np.asarray(img)
                if not np.isfinite(values).all():
                    nan = int(np.isnan(values).sum())
                    raise NonFinitePixelsError(Path(path), entry_id, nan, int(np.isinf(values).sum()))
            array = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))  # convert() would copy
    except FileNotFoundError:
        raise DataError(f"PIE-Bench entry {entry_id}: image file {path} is missing; check dataset.root.") from None
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"PIE-Bench entry {entry_id}: cannot read image {path} ({err}); replace the file.") from err
    # CHW made contiguous while still 8-bit: a quarter of the bytes a float transpose would move.
    return np.ascontiguousarray(array.transpose(2, 0, 1))




def load_mapping(root: Path) -> dict[str, dict[str, Any]]:
    path = root / "mapping_file.json"
    if not path.is_file():
        raise DataError(
            f"PIE-Bench: {path} not found; dataset.root must be the folder holding mapping_file.json "
            "and annotation_images/ (the unpacked PIE-Bench_v1 archive)."
        )
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(
            f"PIE-Bench: {path} is not valid JSON ({err}); re-extract it from the PIE-Bench archive."
        ) from err
    if not isinstance(mapping, dict) or not all(isinstance(v, dict) for v in mapping.values()):
        raise DataError(f"PIE-Bench: {path} must be a JSON object of id -> entry objects; re-extract it.")
    return mapping


EDITED_FORMATS = ("jpeg", "png")


class PIEBench(Dataset):
    """The 700 PIE-Bench images with masks, prompts and categories.

    How runs save, and therefore score, edited images, as the official scripts save them
    by default: each edit is the pipeline's full-size PIL output saved under its source's
    file name, ``<id>.jpg``, with PIL's defaults (leeguandong/DCAG test.py line 83,
    little-misfit/GRAG-Image-Editing Qwen-Edit-GRAG/test.py line 95:
    ``image[0].save(os.path.join(out_path, img_folder, img_name))``), and is scored as
    attnedit-evaluate scores that file (decoded, resized to the source size).
    ``edited_format``: "jpeg" (default, PIL quality ``jpeg_quality`` = 75) or "png"
    (lossless). ``saved_size``: "output" (default: the file at the pipeline's output
    size, resized after decoding) or "source" (the output resized to the source size,
    then saved: attnedit before this key). Both other values are named deviations,
    recorded per row and marked in titles (attnedit.run.saved_edits).

    Selection: ``categories`` (ids 0-9), then ``ids``, then the first ``first_n`` of the
    sorted result. Sample fields: ``mask`` (HxW float, 1 = edit region),
    ``original_prompt`` / ``editing_prompt`` (brackets stripped; the raw texts are in
    ``*_raw``), ``editing_instruction``, ``category_name``, ``blended_word``,
    ``image_path`` (relative to annotation_images/).
    """

    name = "piebench"

    def __init__(
        self,
        root: str | Path,
        categories: Iterable[int | str] | None = None,
        ids: Iterable[str] | None = None,
        first_n: int | None = None,
        edited_format: str = "jpeg",
        jpeg_quality: int = 75,
        saved_size: str = "output",
    ) -> None:
        if edited_format not in EDITED_FORMATS:
            raise ConfigError(f"PIE-Bench: edited_format={edited_format!r} is not one of {EDITED_FORMATS}.")
        self.saved_size = check_saved_size("PIE-Bench", saved_size,
                                           "the pipeline's full-size output, as the official scripts save it")
        if not 1 <= int(jpeg_quality) <= 95:
            raise ConfigError(f"PIE-Bench: jpeg_quality={jpeg_quality} must be 1-95 (PIL's range).")
        self.edited_format, self.jpeg_quality = edited_format, int(jpeg_quality)
        self.root = Path(root).expanduser()
        self.mapping = load_mapping(self.root)
        self.categories = None if categories is None else sorted({str(c) for c in categories}, key=int)
        bad = [c for c in self.categories or [] if c not in CATEGORY_NAMES]
        if bad:
            raise DataError(f"PIE-Bench: unknown categories {bad}; use ids 0-9 ({CATEGORY_NAMES}).")
        chosen = sorted(self.mapping)
        if self.categories is not None:
            chosen = [i for i in chosen if str(self.mapping[i].get("editing_type_id")) in self.categories]
        if ids is not None:
            wanted = [str(i) for i in ids]
            unknown = [i for i in wanted if i not in self.mapping]
            if unknown:
                raise DataError(f"PIE-Bench: ids {unknown[:5]} are not in {self.root / 'mapping_file.json'}.")
            wanted_set = set(wanted)
            chosen = [i for i in chosen if i in wanted_set]
        self.first_n = check_first_n("PIE-Bench", first_n)
        self._ids = chosen if self.first_n is None else chosen[: self.first_n]

    def sample_ids(self) -> list[str]:
        return list(self._ids)

    def entry(self, sample_id: str) -> dict[str, Any]:
        """The validated mapping entry of one id."""
        if sample_id not in self.mapping:
            raise DataError(f"PIE-Bench: id {sample_id!r} is not in {self.root / 'mapping_file.json'}.")
        item = self.mapping[sample_id]
        missing = [k for k in REQUIRED_KEYS if k not in item]
        if missing:
            raise DataError(
                f"PIE-Bench entry {sample_id}: missing keys {missing}; every entry needs {list(REQUIRED_KEYS)} "
                "(re-extract mapping_file.json from the PIE-Bench archive)."
            )
        category = str(item["editing_type_id"])
        if category not in CATEGORY_NAMES:
            raise DataError(f"PIE-Bench entry {sample_id}: editing_type_id {category!r} is not one of 0-9.")
        return item

    def image_file(self, sample_id: str) -> Path:
        return self.root / "annotation_images" / self.entry(sample_id)["image_path"]

    def load(self, sample_id: str) -> Sample:
        sample = self.load_uint8(sample_id)
        sample.image = sample.image.float().div_(255)
        sample.fields["mask"] = sample.fields["mask"].float()
        return sample

    def load_uint8(self, sample_id: str) -> Sample:
        """:meth:`load` with the image (3xHxW, a view of the decoded array) and the mask
        (HxW, 0/1) left as uint8: what a decoding thread should hand over; torch work
        there would start an OpenMP team per thread, the float conversion is cheaper
        where the metrics run, and a quarter of the bytes cross to a GPU."""
        item = self.entry(sample_id)
        runs = check_rle(item["mask"], sample_id)  # malformed masks fail before the image is read
        path = self.image_file(sample_id)
        image = torch.from_numpy(read_rgb_uint8(path, sample_id))
        mask = decode_runs(runs, image.shape[1], image.shape[2], sample_id, np.uint8)
        category = str(item["editing_type_id"])
        return Sample(
            id=sample_id,
            image=image,
            path=str(path),
            category=category,
            fields={
                "mask": mask,
                "original_prompt": strip_brackets(item["original_prompt"]),
                "editing_prompt": strip_brackets(item["editing_prompt"]),
                "original_prompt_raw": item["original_prompt"],
                "editing_prompt_raw": item["editing_prompt"],
                "editing_instruction": item["editing_instruction"],
                "category_name": CATEGORY_NAMES[category],
                "blended_word": item["blended_word"],
                "image_path": item["image_path"],
            },
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "root": str(self.root),
            "categories": self.categories,
            "first_n": self.first_n,
            "num_samples": len(self._ids),
            "edited_format": self.edited_format,
            "jpeg_quality": self.jpeg_quality,
            "saved_size": self.saved_size,
        }

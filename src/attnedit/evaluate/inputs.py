"""attnedit-evaluate's inputs: each entry's source, mask and prompts and every method's
edited image, decoded by threads ahead of the batch being scored and brought to the
source size (``edited_size``) on the device."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from attnedit.data.base import Sample
from attnedit.data.piebench import NonFinitePixelsError, PIEBench, read_rgb_uint8
from attnedit.errors import DataError
from attnedit.metrics.piebench import match_size

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def find_edited(folder: Path, image_path: str) -> Path | None:
    exact = folder / image_path
    if exact.is_file():
        return exact
    for ext in EXTENSIONS:
        candidate = exact.with_suffix(ext)
        if candidate.is_file():
            return candidate
    return None


def fit_mode(edited: torch.Tensor, size: tuple[int, int], mode: str) -> str | None:
    """What ``edited_size`` does to a 3xHxW edited image: None (already the source size),
    "crop", "resize" or "error". ``auto`` follows the official script (evaluate.py lines
    271-273): a non-square image is cropped; any other size, where it would stop, resized."""
    if tuple(edited.shape[-2:]) == tuple(size):
        return None
    if mode == "auto":
        return "crop" if edited.shape[-1] != edited.shape[-2] else "resize"
    return mode


def fit_edited(edited: torch.Tensor, size: tuple[int, int], mode: str, path: Path) -> torch.Tensor:
    """Bring an edited 3xHxW float image to the source size per ``edited_size``."""
    action = fit_mode(edited, size, mode)
    if action is None:
        return edited
    h, w = size
    if action == "resize":
        return match_size(edited[None], size)[0]
    if action == "crop" and edited.shape[1] >= h and edited.shape[2] >= w:
        return edited[:, -h:, -w:]  # the official script's crop of side-by-side outputs
    raise DataError(
        f"edited image {path} is {edited.shape[2]}x{edited.shape[1]}, the source is {w}x{h}; "
        f"edited_size={mode} cannot bring it to the source size: use edited_size=resize (bicubic) "
        "or crop (bottom-right, as the official script), or fix the image."
    )


@dataclass
class Item:
    """One entry as the decoding threads hand it over: the source (uint8 image, mask,
    prompts) and, per method, its uint8 edited image as read (None: not scored) and file."""

    sample: Sample
    edited: list[torch.Tensor | None]
    paths: list[Path | None]
    skipped: str | None = None  # missing=skip: the warning to give (in the main thread, in order)
    failed: list[str] = field(default_factory=list)  # nonfinite=nan: a warning per image not scored


def read_item(dataset: PIEBench, sample_id: str, methods: dict[str, Path], cfg: Any) -> Item:
    """Decode one entry for every method (runs in a decoding thread: numpy and PIL only)."""
    sample = dataset.load_uint8(sample_id)
    edited, paths, failed = [], [], []
    for name, folder in methods.items():
        path = find_edited(folder, sample.fields["image_path"])
        if path is None:
            where = folder / sample.fields["image_path"]
            message = f"PIE-Bench entry {sample.id}: method '{name}' has no edited image {where}"
            if cfg.missing == "skip":
                return Item(sample, [], [], skipped=f"{message}; skipped.")
            raise DataError(f"{message}; edited= must mirror annotation_images/ (or pass missing=skip).")
        try:
            edited.append(torch.from_numpy(read_rgb_uint8(path, sample.id)))
        except NonFinitePixelsError as err:
            if cfg.nonfinite == "error":
                fix = "re-save it from finite values, or pass nonfinite=nan to record its scores as NaN (failed)"
                raise NonFinitePixelsError(err.path, err.entry_id, err.nan, err.inf, fix) from None
            fix = "its cells are left empty (failed); to score it once fixed, delete its row from the CSV and rerun"
            failed.append(str(NonFinitePixelsError(err.path, err.entry_id, err.nan, err.inf, fix)))
            edited.append(None)
        paths.append(path)
    return Item(sample, edited, paths, failed=failed)


def ahead(fn: Callable[[str], Item], keys: Iterable[str], workers: int, depth: int) -> Iterator[Item]:
    """fn(key) for every key, in order, computed up to ``depth`` keys ahead by ``workers``
    threads; an error surfaces at its key, in order. workers=0: in this thread, one by one."""
    if workers == 0:
        yield from map(fn, keys)
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="attnedit-decode")
    try:
        keys = iter(keys)
        queue = deque(pool.submit(fn, key) for key in islice(keys, depth))
        while queue:
            future = queue.popleft()
            queue.extend(pool.submit(fn, key) for key in islice(keys, 1))
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class Staging:
    """uint8 batches to the device. On CUDA through pinned host memory without waiting, so
    the copy is queued behind the previous batch's kernels instead of stopping the host;
    elsewhere a plain stack."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.pinned = device, device.type == "cuda"
        # Batches queued ahead of the one whose rows are written: on a GPU one, so the host
        # prepares batch N+1 while the device scores batch N; on a CPU scoring is done when
        # it returns, and a row written late could only be lost to a kill.
        self.ahead = 1 if self.pinned else 0
        if self.pinned and device.index is not None:
            torch.cuda.set_device(device)  # pinned memory and events belong to the chosen GPU, not GPU 0

    def stack(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        if not self.pinned:
            return torch.stack(tensors).to(self.device)
        # Pinned blocks come from torch's caching host allocator, which keeps each one
        # until the copy reading it has run.
        host = torch.empty((len(tensors), *tensors[0].shape), dtype=tensors[0].dtype, pin_memory=True)
        return torch.stack(tensors, out=host).to(self.device, non_blocking=True)

    def to_float(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """uint8 images -> float in [0, 1] on the device (a quarter of the bytes cross)."""
        return self.stack(tensors).float().div_(255)


def edited_batch(images: list[torch.Tensor], size, mode: str, paths: list[Path], staging: Staging,
                 fitted: Counter) -> torch.Tensor:
    """One method's uint8 edited images -> float NCHW at the source size on the device
    (``mode``: ``edited_size``). The runner brings its PIE-Bench edits to the source size
    through this function too (attnedit.run.saved_edits), so a run scores what this scores."""
    if all(tuple(image.shape[-2:]) == tuple(size) for image in images):
        return staging.to_float(images)
    out = []
    for image, path in zip(images, paths):
        action = fit_mode(image, size, mode)
        if action is not None:
            fitted[action] += 1
        out.append(fit_edited(staging.to_float([image])[0], size, mode, path))
    return torch.stack(out)

"""``attnedit-evaluate``: score a folder of already-edited PIE-Bench images with the
official metrics, without running any model.

    attnedit-evaluate dataset.root=<PIE-Bench root> edited=<folder like annotation_images/> \\
        metrics=[psnr_unedit_part,ssim_unedit_part,mse_unedit_part,lpips_unedit_part] \\
        out=results/mine.csv name=mine

Several methods in one call, as the official script's method list (each source image
is read, decoded and, for LPIPS, SSIM, CLIP and structure distance, prepared once for
all of them): ``edited={none: runs/none, grag: runs/grag}`` instead of ``name=``.

The edited image of entry ``id`` is ``<edited>/<image_path>``; the same path with
another image extension (.png, .jpg, .jpeg, .webp, .bmp, .tif, .tiff) is accepted too.
Output: the official per-image CSV (``file_id``, then ``<method>|<metric>`` per method,
in the given order), rows appended per batch so a crash loses nothing; a rerun with the
same ``out`` skips the ids already there. Cells as the official script writes them
(cure-lab/PnPInversion evaluation/evaluate.py: ``calculate_metric`` returns the string
"nan" for an empty region, lines 40-98, and ``csv.writer`` writes floats by ``repr``,
lines 281-283): "nan" where the region is empty; an empty cell where the edited image
could not be scored (NaN/inf pixels with ``nonfinite=nan``), which the official script
has no token for. Next to it: ``<stem>_summary.md`` / ``.csv`` (per-category means, NaN
skipped, failures counted) and ``<stem>_meta.json`` (settings; a resume must match them).

Edited images of another size (``edited_size``): ``auto`` (default) crops a non-square
image to its bottom-right corner at the source size, as the official script does
(evaluate.py lines 271-273: PnPInversion saves source | edit side by side), and resizes
any other size (bicubic, antialiased: instruction editors such as Qwen-Image-Edit return
1024 x 1024 for PIE-Bench's 512 x 512, where the official script's shape assertion stops).

Images and masks are decoded by ``workers`` threads (PIL and numpy release the GIL) ahead
of the batch being scored; each batch goes to the device as uint8 and becomes float there.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import tempfile
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from tqdm.auto import tqdm

from attnedit.backends.loading import pick_device
from attnedit.data.base import Sample
from attnedit.data.piebench import NonFinitePixelsError, PIEBench, read_rgb_uint8
from attnedit.errors import ConfigError, DataError
from attnedit.metrics.base import PairMetric, check_image_shapes
from attnedit.metrics.piebench import (
    PIEBENCH_METRICS,
    SSIM_CONVENTIONS,
    PIEBenchSSIM,
    match_size,
)
from attnedit.metrics.registry import instantiate_metrics
from attnedit.piebench_summary import summarize, write_summary

CHOICES = {
    "missing": ("error", "skip"),
    "edited_size": ("auto", "resize", "crop", "error"),
    "weights": ("pretrained", "random"),
    "ssim_convention": tuple(SSIM_CONVENTIONS),
    "nonfinite": ("error", "nan"),
}
EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
#: What the CSV cells hold besides numbers (recorded in <stem>_meta.json).
CELLS = {
    "nan": "empty region: no pixel to score (the official script's token)",
    "": "not scored: the edited image holds NaN/inf pixels (nonfinite=nan); counted as failed in the summary",
}
USAGE = __doc__.split("\n\n")[1]


CONFIG_NAME = "evaluate"  # conf/evaluate/evaluate.yaml: the keys, their defaults and the --help text


def config_dir() -> str:
    """conf/evaluate/: a folder of its own, as conf/ holds a ``metrics`` group and here
    ``metrics=[...]`` is a list of names."""
    from attnedit.cli import conf_dir

    return str(Path(conf_dir()) / "evaluate")


def quote_ids(argv: list[str]) -> list[str]:
    """PIE-Bench ids are 12-digit strings; Hydra's grammar would read 111000000001 as a
    number: ``dataset.ids=[a,b]`` (or one id) becomes ``dataset.ids=['a','b']``."""
    out = []
    for arg in argv:
        if arg.startswith("dataset.ids="):
            value = arg.split("=", 1)[1].strip()
            if value not in ("", "null"):
                ids = [i.strip(" '\"") for i in value.strip("[] ").split(",") if i.strip()]
                arg = "dataset.ids=[" + ",".join(f"'{i}'" for i in ids) + "]"
        out.append(arg)
    return out


def compose_config(argv: list[str]) -> DictConfig:
    """conf/evaluate/evaluate.yaml with key=value overrides, as Hydra composes attnedit-run's
    (typos are errors); for ``main(argv)`` called from Python (the console script is a
    Hydra app on the same config: attnedit.cli.evaluate)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from attnedit.entry import explain

    bad = [a for a in argv if "=" not in a]
    if bad:
        raise ConfigError(f"attnedit-evaluate takes key=value arguments, got {bad}.\nUsage:\n{USAGE}")
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose(config_name=CONFIG_NAME, overrides=quote_ids(list(argv)))
    except HydraException as err:
        keys = ", ".join(sorted(_flat_keys(_defaults())))
        raise ConfigError(f"attnedit-evaluate: {explain(err)}. Valid keys: {keys}.") from None
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def _defaults() -> dict:
    tree = OmegaConf.to_container(OmegaConf.load(Path(config_dir()) / f"{CONFIG_NAME}.yaml"))
    return {k: v for k, v in tree.items() if k not in ("defaults", "hydra")}


def parse_args(argv: list[str]) -> Any:
    """key=value overrides on conf/evaluate/evaluate.yaml, checked (check_config)."""
    return check_config(compose_config(argv))


def check_config(cfg: DictConfig) -> DictConfig:
    """Values Hydra cannot check: required keys, choices, ranges, the edited= shape."""
    if isinstance(cfg.dataset.ids, str):  # one id
        cfg.dataset.ids = [cfg.dataset.ids]
    for key in ("dataset.root", "edited", "out"):
        if OmegaConf.select(cfg, key) in (None, ""):
            raise ConfigError(f"attnedit-evaluate: {key}=... is required.\nUsage:\n{USAGE}")
    several = isinstance(cfg.edited, DictConfig)
    if several and cfg.name is not None:
        raise ConfigError("attnedit-evaluate: edited={method: folder, ...} names its methods; drop name=.")
    if not several and cfg.name in (None, ""):
        raise ConfigError(f"attnedit-evaluate: name=... is required with a single edited= folder.\nUsage:\n{USAGE}")
    for key, allowed in CHOICES.items():
        if isinstance(cfg[key], float) and math.isnan(cfg[key]):  # Hydra's grammar reads nonfinite=nan as a float
            cfg[key] = "nan"
        if cfg[key] not in allowed:
            raise ConfigError(f"attnedit-evaluate: {key}={cfg[key]!r} must be one of {allowed}.")
    if int(cfg.batch_size) < 1:
        raise ConfigError("attnedit-evaluate: batch_size must be >= 1.")
    if cfg.workers is not None and (not isinstance(cfg.workers, int) or cfg.workers < 0):
        raise ConfigError(f"attnedit-evaluate: workers={cfg.workers!r} must be null (automatic), 0 or a positive integer.")
    if not cfg.metrics or len(set(cfg.metrics)) != len(cfg.metrics):
        raise ConfigError(f"attnedit-evaluate: metrics={list(cfg.metrics)} must be a non-empty list, no repeats.")
    if several and not cfg.edited:
        raise ConfigError("attnedit-evaluate: edited={} names no method.")
    if several:
        for name, folder in cfg.edited.items():
            if not isinstance(folder, str) or not folder:
                raise ConfigError(
                    f"attnedit-evaluate: edited= gives method {name!r} no folder; write "
                    "'edited={name: folder, other: folder}' with a space after each colon (YAML), quoted for the shell."
                )
    for name in method_folders(cfg):
        if "|" in name or "," in name:
            raise ConfigError(f"attnedit-evaluate: method name {name!r} must not contain '|' or ','.")
    return cfg


def method_folders(cfg: Any) -> dict[str, Path]:
    """Method name -> folder of its edited images, in the order given."""
    if isinstance(cfg.edited, DictConfig):
        return {str(name): Path(str(folder)) for name, folder in cfg.edited.items()}
    return {str(cfg.name): Path(str(cfg.edited))}


def _flat_keys(tree: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        keys += _flat_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else [prefix + key]
    return keys


def metric_options(cfg: Any) -> dict[str, dict[str, Any]]:
    """Constructor arguments per metric family (PSNR and MSE take none)."""
    learned = {"weights": cfg.weights, "seed": int(cfg.seed)}
    return {
        "ssim_": {"convention": cfg.ssim_convention},  # the PIE-Bench SSIMs, not the plain "ssim"
        "lpips": {**learned, "net_type": cfg.lpips_net},
        "clip_similarity": {**learned, "model": cfg.clip_model},
        "structure_distance": {**learned, "model": cfg.dino_model, "antialias": bool(cfg.dino_antialias)},
    }


def build_metrics(cfg: Any) -> list[PairMetric]:
    """Metric names -> config nodes built as attnedit-run builds its ``metrics`` group."""
    options = metric_options(cfg)
    nodes = {}
    for name in cfg.metrics:
        family = next((f for f in options if name.startswith(f)), None)
        kwargs = options[family] if family else {}
        # PIE-Bench names directly: the registry would first import every metric module.
        target = PIEBENCH_METRICS[name] if name in PIEBENCH_METRICS else None
        nodes[name] = {"_target_": "attnedit.metrics.registry.build_metric", "name": name, **kwargs} if target is None \
            else {"_target_": "attnedit.evaluate.piebench_metric", "name": name, **kwargs}
    return instantiate_metrics(nodes)


def piebench_metric(name: str, **kwargs) -> PairMetric:
    return PIEBENCH_METRICS[name](**kwargs)


def resolve_device(device: str) -> torch.device:
    """As attnedit-run's models (attnedit.backends.loading.pick_device): CUDA asked for
    where there is none is one line, not a traceback in the first batch."""
    return pick_device(str(device), "device")


def resolve_workers(workers: int | None) -> int:
    """Decoding threads: as given, or min(8, the cores this process may use)."""
    if workers is not None:
        return int(workers)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(8, cores)


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
    """The SSIM convention of the run, None when it scores no PIE-Bench SSIM."""
    return cfg.ssim_convention if any(isinstance(m, PIEBenchSSIM) for m in metrics) else None


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


def score_group(
    metrics: list[PairMetric], editeds: list[torch.Tensor], reference: torch.Tensor, context: dict[str, Any]
) -> torch.Tensor:
    """Every metric on one batch of equal-sized images, for every method: [n, methods x
    metrics] float64 on the device, method-major (the CSV's column order), without waiting
    for the device. The images' range is not checked: each is uint8 / 255 or a clamped
    resize of one, in [0, 1] by construction (a check would wait for the device)."""
    label = ", ".join(m.name for m in metrics)
    for edited in editeds:
        check_image_shapes(edited, reference, label)
    columns: list[list[torch.Tensor]] = [[] for _ in editeds]
    for m in metrics:
        needed = {k: context[k] for k in m.needs}
        for method, scores in zip(columns, m.score_each(editeds, reference, **needed)):
            method.append(torch.as_tensor(scores[m.name], dtype=torch.float64, device=reference.device))
    return torch.stack([value for method in columns for value in method], dim=1)


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


def edited_batch(images: list[torch.Tensor], size, cfg: Any, paths: list[Path], staging: Staging,
                 fitted: Counter) -> torch.Tensor:
    """One method's uint8 edited images -> float NCHW at the source size on the device."""
    if all(tuple(image.shape[-2:]) == tuple(size) for image in images):
        return staging.to_float(images)
    out = []
    for image, path in zip(images, paths):
        action = fit_mode(image, size, cfg.edited_size)
        if action is not None:
            fitted[action] += 1
        out.append(fit_edited(staging.to_float([image])[0], size, cfg.edited_size, path))
    return torch.stack(out)


@dataclass
class Scored:
    """One batch's scores on their way to the host: ``values`` [n, methods x metrics] is
    complete once ``ready`` (a CUDA event; None elsewhere) has passed."""

    ids: list[str]
    failed: list[list[bool]]  # per entry, per method: not scored (NaN/inf pixels)
    values: torch.Tensor
    ready: Any = None

    def rows(self) -> list[list[str]]:
        """The batch's CSV rows (waits for the device)."""
        if self.ready is not None:
            self.ready.synchronize()
        values = self.values.tolist()
        per_method = len(values[0]) // len(self.failed[0]) if values and self.failed[0] else 0
        rows = []
        for entry, failed, cells in zip(self.ids, self.failed, values):
            row = [entry]
            for k, skip in enumerate(failed):
                row += ["" if skip else format_value(v) for v in cells[k * per_method : (k + 1) * per_method]]
            rows.append(row)
        return rows


def score_items(items: list[Item], cfg: Any, metrics: list[PairMetric], staging: Staging, fitted: Counter) -> Scored:
    """Queue the scoring of decoded entries for every method; :meth:`Scored.rows` gives
    their CSV rows (grouped by image size, sizes in order of first appearance)."""
    n_methods = len(items[0].edited)
    order, blocks = [], []
    for size in dict.fromkeys(tuple(it.sample.image.shape[-2:]) for it in items):  # a batch holds one size
        group = [it for it in items if tuple(it.sample.image.shape[-2:]) == size]
        reference = staging.to_float([it.sample.image for it in group])
        editeds = []
        for k in range(n_methods):
            # A failed image is scored as the source (in range, right size); its cells are blanked.
            images = [it.sample.image if it.edited[k] is None else it.edited[k] for it in group]
            editeds.append(edited_batch(images, size, cfg, [it.paths[k] for it in group], staging, fitted))
        context = {
            "mask": staging.stack([it.sample.fields["mask"] for it in group]),
            "original_prompt": [it.sample.fields["original_prompt"] for it in group],
            "editing_prompt": [it.sample.fields["editing_prompt"] for it in group],
        }
        blocks.append(score_group(metrics, editeds, reference, context))
        order += group
    values, ready = torch.cat(blocks), None
    if staging.pinned:  # copied back without waiting; Scored.rows waits for this event only
        host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
        values = host.copy_(values, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record(torch.cuda.current_stream(staging.device))
    failed = [[edited is None for edited in it.edited] for it in order]
    return Scored([it.sample.id for it in order], failed, values, ready)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        print(USAGE)
        return 0
    return evaluate(parse_args(argv))


def evaluate(cfg: DictConfig) -> int:
    """Score, write the CSV and its summaries; ``cfg``: conf/evaluate/evaluate.yaml composed."""
    cfg = check_config(cfg)
    device = resolve_device(cfg.device)  # before any work
    out = Path(cfg.out)
    prepare_output(out)
    dataset = PIEBench(cfg.dataset.root, cfg.dataset.categories, cfg.dataset.ids, cfg.dataset.first_n)
    methods = method_folders(cfg)
    for name, folder in methods.items():
        if not folder.is_dir():
            raise DataError(
                f"edited folder {folder} of method '{name}' is not a folder; it must mirror "
                "<PIE-Bench root>/annotation_images/."
            )
    metrics = build_metrics(cfg)
    names = [m.name for m in metrics]
    check_meta(meta_path(out), run_settings(cfg, dataset, metrics), out)
    log = CsvLog(out, ["file_id"] + [f"{method}|{n}" for method in methods for n in names])
    todo = [i for i in dataset.sample_ids() if i not in log.done]
    batch_size, workers = int(cfg.batch_size), resolve_workers(cfg.workers)
    bar = tqdm(total=len(todo), desc=f"PIE-Bench {', '.join(methods)}", unit="img", disable=not cfg.progress)
    fitted: Counter = Counter()
    staging = Staging(device)
    decoded = ahead(lambda i: read_item(dataset, i, methods, cfg), todo, workers, max(2 * batch_size, 2 * workers))
    # On a GPU, batch N's rows are written once batch N+1 is queued (Staging.ahead).
    queued: deque[Scored] = deque()

    def write(scored: Scored) -> None:
        log.append(scored.rows())
        bar.update(len(scored.ids))

    try:
        with closing(decoded):
            batch: list[Item] = []
            for item in decoded:
                for message in item.failed:
                    warnings.warn(message, stacklevel=2)
                if item.skipped:
                    warnings.warn(item.skipped, stacklevel=2)
                    bar.update(1)
                    continue
                batch.append(item)
                if len(batch) == batch_size:
                    queued.append(score_items(batch, cfg, metrics, staging, fitted))
                    batch = []
                    while len(queued) > staging.ahead:
                        write(queued.popleft())
            if batch:
                queued.append(score_items(batch, cfg, metrics, staging, fitted))
    except BaseException:
        # Whatever stopped the loop, the rows already scored are written; the first error is the one reported.
        try:
            while queued:
                write(queued.popleft())
        except Exception as err:
            warnings.warn(f"rows of {len(queued) + 1} scored batch(es) could not be written to {out} ({err}); "
                          "a rerun scores them again", stacklevel=2)
        raise
    while queued:
        write(queued.popleft())
    bar.close()
    random_weights = sorted({m.weights for m in metrics if m.uses_random_weights})
    table = summarize(out, dataset, list(methods), names)
    text = write_summary(table, out, list(methods), names, random_weights, ssim_convention(cfg, metrics))
    print(text)
    for action, count in sorted(fitted.items()):
        how = "cropped to the bottom-right corner" if action == "crop" else "resized (bicubic, antialiased)"
        print(f"{count} edited image(s) of another size than the source {how} (edited_size={cfg.edited_size})")
    print(f"per-image scores: {out}\nsummary: {out.with_name(out.stem + '_summary.md')} and .csv")
    return 0

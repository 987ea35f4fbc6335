"""``attnedit-evaluate``: score a folder of already-edited PIE-Bench images with the
official metrics, without running any model.

    attnedit-evaluate dataset.root=<PIE-Bench root> edited=<folder like annotation_images/> \\
        metrics=[psnr_unedit_part,ssim_unedit_part,mse_unedit_part,lpips_unedit_part] \\
        out=results/mine.csv name=mine

Several methods in one call, as the official script's method list (each source image
is read, decoded and, for LPIPS, SSIM, CLIP and structure distance, prepared once for
all of them): ``edited={none: runs/none, grag: runs/grag}`` instead of ``name=``.

The edited image of entry ``id`` is ``<edited>/<image_path>``; the same path with
another image extension (.png, .jpg, .jpeg, .webp, .bmp) is accepted too. Output: the
official per-image CSV (``file_id``, then ``<method>|<metric>`` per method, in the given
order; empty cell for NaN), rows appended per batch so a crash loses nothing; a rerun
with the same ``out`` skips the ids already there. Next to it: ``<stem>_summary.md`` /
``.csv`` (per-category means, NaN skipped) and ``<stem>_meta.json`` (settings; a resume
must match them).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from tqdm.auto import tqdm

from attnedit.data.piebench import PIEBench, read_rgb
from attnedit.errors import ConfigError, DataError
from attnedit.metrics.base import PairMetric, check_image_range, check_image_shapes
from attnedit.metrics.piebench import OFFICIAL_DEFAULT_METRICS, match_size
from attnedit.metrics.registry import build_metric
from attnedit.piebench_summary import summarize, write_summary

DEFAULTS: dict[str, Any] = {
    "dataset": {"root": None, "categories": None, "ids": None, "first_n": None},
    "edited": None,  # folder laid out like annotation_images/, or {method: folder, ...}
    "out": None,  # the per-image CSV
    "name": None,  # the method name of a single folder: the CSV columns are "<name>|<metric>"
    "metrics": list(OFFICIAL_DEFAULT_METRICS),
    "batch_size": 8,
    "device": "auto",  # auto | cpu | cuda | cuda:N
    "weights": "pretrained",  # pretrained | random (seeded random backbones, marked everywhere)
    "seed": 0,
    "missing": "error",  # error | skip: what a missing edited image does
    "edited_size": "resize",  # resize (bicubic, antialiased) | crop (official: bottom-right crop) | error
    "lpips_net": "squeeze",
    "clip_model": "openai/clip-vit-large-patch14",
    "dino_model": "vit_base_patch8_224.dino",
    "dino_antialias": False,
    "progress": True,
}
CHOICES = {
    "missing": ("error", "skip"),
    "edited_size": ("resize", "crop", "error"),
    "weights": ("pretrained", "random"),
}
EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
USAGE = __doc__.split("\n\n")[1]


def parse_args(argv: list[str]) -> Any:
    """key=value overrides (OmegaConf dotlist) on DEFAULTS; unknown keys are errors."""
    bad = [a for a in argv if "=" not in a]
    if bad:
        raise ConfigError(f"attnedit-evaluate takes key=value arguments, got {bad}.\nUsage:\n{USAGE}")
    # PIE-Bench ids are 12-digit strings; YAML would read 000000000011 as a number.
    ids = [a.split("=", 1)[1] for a in argv if a.startswith("dataset.ids=")]
    argv = [a for a in argv if not a.startswith("dataset.ids=")]
    cfg = OmegaConf.create(DEFAULTS)
    OmegaConf.set_struct(cfg, True)
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(argv)))
        if ids and ids[-1].strip() not in ("", "null"):
            cfg.dataset.ids = [i.strip(" '\"") for i in ids[-1].strip("[] ").split(",") if i.strip()]
    except OmegaConfBaseException as err:
        keys = ", ".join(sorted(_flat_keys(DEFAULTS)))
        reason = getattr(err, "msg", str(err))
        raise ConfigError(f"attnedit-evaluate: {reason}. Valid keys: {keys}.") from None
    for key in ("dataset.root", "edited", "out"):
        if OmegaConf.select(cfg, key) in (None, ""):
            raise ConfigError(f"attnedit-evaluate: {key}=... is required.\nUsage:\n{USAGE}")
    several = isinstance(cfg.edited, DictConfig)
    if several and cfg.name is not None:
        raise ConfigError("attnedit-evaluate: edited={method: folder, ...} names its methods; drop name=.")
    if not several and cfg.name in (None, ""):
        raise ConfigError(f"attnedit-evaluate: name=... is required with a single edited= folder.\nUsage:\n{USAGE}")
    for key, allowed in CHOICES.items():
        if cfg[key] not in allowed:
            raise ConfigError(f"attnedit-evaluate: {key}={cfg[key]!r} must be one of {allowed}.")
    if int(cfg.batch_size) < 1:
        raise ConfigError("attnedit-evaluate: batch_size must be >= 1.")
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
    """Constructor arguments per metric family (pixel metrics take none)."""
    learned = {"weights": cfg.weights, "seed": int(cfg.seed)}
    return {
        "lpips": {**learned, "net_type": cfg.lpips_net},
        "clip_similarity": {**learned, "model": cfg.clip_model},
        "structure_distance": {**learned, "model": cfg.dino_model, "antialias": bool(cfg.dino_antialias)},
    }


def build_metrics(cfg: Any) -> list[PairMetric]:
    options = metric_options(cfg)
    metrics = []
    for name in cfg.metrics:
        family = next((f for f in options if name.startswith(f)), None)
        metrics.append(build_metric(name, **(options[family] if family else {})))
    return metrics


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def find_edited(folder: Path, image_path: str) -> Path | None:
    exact = folder / image_path
    if exact.is_file():
        return exact
    for ext in EXTENSIONS:
        candidate = exact.with_suffix(ext)
        if candidate.is_file():
            return candidate
    return None


def fit_edited(edited: torch.Tensor, size: tuple[int, int], mode: str, path: Path) -> torch.Tensor:
    """Bring an edited 3xHxW image to the source size per ``edited_size``."""
    if tuple(edited.shape[-2:]) == tuple(size):
        return edited
    h, w = size
    if mode == "resize":
        return match_size(edited[None], size)[0]
    if mode == "crop" and edited.shape[1] >= h and edited.shape[2] >= w:
        return edited[:, -h:, -w:]  # the official script's crop of side-by-side outputs
    raise DataError(
        f"edited image {path} is {edited.shape[2]}x{edited.shape[1]}, the source is {w}x{h}; "
        "use edited_size=resize (bicubic) or crop (bottom-right, as the official script), or fix the image."
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
    """Empty for NaN (never "nan"); full precision otherwise."""
    return "" if math.isnan(value) else repr(float(value))


def check_meta(path: Path, meta: dict[str, Any]) -> None:
    """Resuming must not mix rows scored under other settings (weights above all)."""
    if path.is_file():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
        if diff:
            raise ConfigError(
                f"{path} records other settings for {diff} ({ {k: old.get(k) for k in diff} }); "
                "choose another out= or delete the csv and its _meta.json to start over."
            )
    path.write_text(json.dumps(meta, indent=2))


def run_settings(cfg: Any, dataset: PIEBench, metrics: list[PairMetric]) -> dict[str, Any]:
    """What the rows of one CSV must share: methods and their folders, metrics, weights, options."""
    options = OmegaConf.to_container(cfg)
    return {
        "edited": {name: str(folder.resolve()) for name, folder in method_folders(cfg).items()},
        "metrics": [m.name for m in metrics],
        "weights": {m.name: m.weights for m in metrics},
        "dataset_root": str(dataset.root.resolve()),
        **{k: options[k] for k in ("edited_size", "lpips_net", "clip_model", "dino_model", "dino_antialias")},
    }


def score_group(
    metrics: list[PairMetric], editeds: list[torch.Tensor], reference: torch.Tensor, context: dict[str, Any]
) -> list[list[torch.Tensor]]:
    """Every metric on one batch of equal-sized images, for every method: per method, one
    tensor per metric. The input checks are made once per image batch, not per metric."""
    label = ", ".join(m.name for m in metrics)
    check_image_range(reference, "reference", label)
    for edited in editeds:
        check_image_shapes(edited, reference, label)
        check_image_range(edited, "edited", label)
    columns = [[] for _ in editeds]
    for m in metrics:
        needed = {k: context[k] for k in m.needs}
        for method, scores in zip(columns, m.score_each(editeds, reference, **needed)):
            method.append(scores[m.name].cpu())
    return columns


def load_edited(sample, methods: dict[str, Path], cfg: Any) -> list[torch.Tensor] | None:
    """Every method's edited image of one entry at the source size; None if one is missing and missing=skip."""
    images = []
    for name, folder in methods.items():
        path = find_edited(folder, sample.fields["image_path"])
        if path is None:
            where = folder / sample.fields["image_path"]
            if cfg.missing == "skip":
                message = f"PIE-Bench entry {sample.id}: method '{name}' has no edited image {where}; skipped."
                warnings.warn(message, stacklevel=3)
                return None
            raise DataError(
                f"PIE-Bench entry {sample.id}: method '{name}' has no edited image {where}; "
                "edited= must mirror annotation_images/ (or pass missing=skip)."
            )
        images.append(fit_edited(read_rgb(path, sample.id), sample.image.shape[-2:], cfg.edited_size, path))
    return images


def score_batch(
    dataset: PIEBench, ids: list[str], cfg: Any, metrics: list[PairMetric], device, methods: dict[str, Path]
) -> list[list[str]]:
    """Score one batch of ids for every method; returns CSV rows (ids with a skipped image are left out)."""
    items = []
    for sample_id in ids:
        sample = dataset.load(sample_id)
        edited = load_edited(sample, methods, cfg)
        if edited is not None:
            items.append((sample, edited))
    rows = []
    for size in dict.fromkeys(tuple(s.image.shape[-2:]) for s, _ in items):  # a batch holds one size
        group = [(s, e) for s, e in items if tuple(s.image.shape[-2:]) == size]
        reference = torch.stack([s.image for s, _ in group]).to(device)
        editeds = [torch.stack([e[k] for _, e in group]).to(device) for k in range(len(methods))]
        context = {
            "mask": torch.stack([s.fields["mask"] for s, _ in group]).to(device),
            "original_prompt": [s.fields["original_prompt"] for s, _ in group],
            "editing_prompt": [s.fields["editing_prompt"] for s, _ in group],
        }
        columns = score_group(metrics, editeds, reference, context)
        for i, (sample, _) in enumerate(group):
            rows.append([sample.id] + [format_value(float(v[i])) for method in columns for v in method])
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        print(USAGE)
        return 0
    cfg = parse_args(argv)
    dataset = PIEBench(cfg.dataset.root, cfg.dataset.categories, cfg.dataset.ids, cfg.dataset.first_n)
    methods = method_folders(cfg)
    for name, folder in methods.items():
        if not folder.is_dir():
            raise DataError(
                f"edited folder {folder} of method '{name}' is not a folder; it must mirror "
                "<PIE-Bench root>/annotation_images/."
            )
    metrics = build_metrics(cfg)
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    names = [m.name for m in metrics]
    check_meta(out.with_name(f"{out.stem}_meta.json"), run_settings(cfg, dataset, metrics))
    log = CsvLog(out, ["file_id"] + [f"{method}|{n}" for method in methods for n in names])
    todo = [i for i in dataset.sample_ids() if i not in log.done]
    bar = tqdm(total=len(todo), desc=f"PIE-Bench {', '.join(methods)}", unit="img", disable=not cfg.progress)
    for start in range(0, len(todo), int(cfg.batch_size)):
        batch = todo[start : start + int(cfg.batch_size)]
        log.append(score_batch(dataset, batch, cfg, metrics, device, methods))
        bar.update(len(batch))
    bar.close()
    random_weights = sorted({m.weights for m in metrics if m.uses_random_weights})
    table = summarize(out, dataset, list(methods), names)
    text = write_summary(table, out, list(methods), names, random_weights)
    print(text)
    print(f"per-image scores: {out}\nsummary: {out.with_name(out.stem + '_summary.md')} and .csv")
    return 0

"""attnedit-evaluate's settings: ``conf/evaluate/evaluate.yaml`` composed with key=value
overrides, and the checks Hydra cannot make (required keys, choices, the ``edited=`` shape)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from attnedit.backends.loading import pick_device
from attnedit.config import compose, conf_dir, without_hydra
from attnedit.errors import ConfigError, explain
from attnedit.metrics import registry
from attnedit.metrics.base import PairMetric
from attnedit.metrics.piebench import SSIM_BORDER, SSIM_CONVENTIONS

CHOICES = {
    "missing": ("error", "skip"),
    "edited_size": ("auto", "resize", "crop", "error"),
    "weights": ("pretrained", "random"),
    "ssim_convention": tuple(SSIM_CONVENTIONS),
    "nonfinite": ("error", "nan"),
}
USAGE = """    attnedit-evaluate dataset.root=<PIE-Bench root> edited=<folder like annotation_images/> \\
        metrics=[psnr_unedit_part,ssim_unedit_part,mse_unedit_part,lpips_unedit_part] \\
        out=results/mine.csv name=mine"""
CONFIG_NAME = "evaluate"  # conf/evaluate/evaluate.yaml: the keys, their defaults and the --help text


def config_dir() -> Path:
    """conf/evaluate/: a folder of its own, as conf/ holds a ``metrics`` group and here
    ``metrics=[...]`` is a list of names."""
    return conf_dir() / "evaluate"


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


def compose_config(overrides: list[str]) -> DictConfig:
    """conf/evaluate/evaluate.yaml with key=value overrides, as the ``attnedit-evaluate``
    Hydra app composes it (typos are errors), for calling :func:`attnedit.evaluate.evaluator.evaluate`
    from Python."""
    from hydra.errors import HydraException

    try:
        cfg = compose(CONFIG_NAME, quote_ids(list(overrides)), config_dir())
    except HydraException as err:
        raise ConfigError(f"attnedit-evaluate: {explain(err)}") from None
    return without_hydra(cfg)


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


def metric_options(cfg: Any) -> dict[str, dict[str, Any]]:
    """Constructor arguments per metric family, keyed by name prefix (the longest prefix of a
    name wins; PSNR and MSE take none). ``ssim_convention`` reaches every SSIM: the region
    SSIMs (``ssim_<region>``) as ``convention``, the plain whole-image ``ssim`` (the official
    script's name, PnPInversion evaluation/evaluate.py lines 36-37) as its ``border``."""
    if cfg.ssim_convention not in SSIM_BORDER:  # also where check_config was not called first
        raise ConfigError(f"attnedit-evaluate: ssim_convention={cfg.ssim_convention!r} must be one of "
                          f"{CHOICES['ssim_convention']}.")
    learned = {"weights": cfg.weights, "seed": int(cfg.seed)}
    return {
        "ssim": {"border": SSIM_BORDER[cfg.ssim_convention]},
        "ssim_": {"convention": cfg.ssim_convention},
        "lpips": {**learned, "net": cfg.lpips_net},  # the plain whole-image LPIPS (attnedit.metrics.perceptual)
        "lpips_": {**learned, "net_type": cfg.lpips_net},
        "clip_similarity": {**learned, "model": cfg.clip_model},
        "structure_distance": {**learned, "model": cfg.dino_model, "antialias": bool(cfg.dino_antialias)},
    }


def build_metrics(cfg: Any) -> list[PairMetric]:
    """The ``metrics=[names]`` of the config, built by the metric registry with each
    family's options, as attnedit-run builds its ``metrics`` group."""
    options = metric_options(cfg)
    nodes = {}
    for name in cfg.metrics:
        family = max((f for f in options if name.startswith(f)), key=len, default=None)
        nodes[name] = {"_target_": "attnedit.metrics.registry.build_metric", "name": name,
                       **(options[family] if family else {})}
    return registry.build_metrics(nodes)


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

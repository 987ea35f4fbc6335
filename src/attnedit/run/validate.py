"""The checks of a composed run config that need nothing but the config: run before any
model loads, and before torch is imported, so a typo costs a second, not the ~30 s of
a model load. Each failure is a :class:`ConfigError` naming the key, the value and the
fix (one line). The constructors check their arguments again, for callers of the Python
API; these checks only move the verdict on a command line's mistake to its start. Not
checked here: what a study's earlier step writes (``method.directions_file``, written by
attnedit-directions, which needs the weights: their error comes first, from the model)."""

from __future__ import annotations

import ctypes
import math
import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from attnedit.errors import ConfigError

#: What a dataset's ``root`` must hold, by the dataset class (the ``_target_``'s last name).
ROOT_HOLDS = {
    "ImageFolder": "a folder of images",
    "PIEBench": "the folder holding mapping_file.json and annotation_images/ (the unpacked PIE-Bench_v1 archive)",
    "GEditBench": "a local copy of stepfun-ai/GEdit-Bench (huggingface-cli download stepfun-ai/GEdit-Bench "
                  "--repo-type dataset --local-dir <dir>, or a save_to_disk folder)",
    "ImgEditBasic": "the folder holding basic_edit.json (PKU-YuanGroup/ImgEdit, Benchmark/Basic/) and the "
                    "unpacked Benchmark.tar",
}


def validate_run_config(cfg: DictConfig) -> None:
    """Every config-only check of an ``attnedit-run`` job (raises the first failure)."""
    _check_device(cfg)
    method = cfg.get("method") or {}
    if "alphas" in method:
        _numbers("method.alphas", method.alphas)
    grid = method.get("grid")
    for key, values in (grid.items() if isinstance(grid, DictConfig) else ()):  # dcag, grag: one list per factor
        _numbers(f"method.grid.{key}", values)
    if "directions" in method:
        _directions("method.directions", method.directions)
    if method.get("window") is not None:
        _window("method.window", method.window)
    _integer("batch_size", cfg.get("batch_size", 8), low=1)
    _integer("seed", cfg.get("seed", 0))
    shard = cfg.get("shard") or {}
    index = _integer("shard.index", shard.get("index", 0), low=0)
    count = _integer("shard.count", shard.get("count", 1), low=1)
    if index >= count:
        raise ConfigError(f"shard.index={index} must be in [0, shard.count={count})")
    _integer("numerical_floor.samples", (cfg.get("numerical_floor") or {}).get("samples", 2), low=0)
    model, dataset = cfg.get("model") or {}, cfg.get("dataset") or {}
    if "num_inference_steps" in model:
        _integer("model.num_inference_steps", model.num_inference_steps, low=1)
    if dataset.get("num_samples") is not None:
        _integer("dataset.num_samples", dataset.num_samples, low=1)
    if "root" in dataset:
        _folder("dataset.root", dataset.root, ROOT_HOLDS.get(str(dataset.get("_target_", "")).rpartition(".")[2],
                                                             "the dataset's folder"))
    _check_judge(cfg)
    if (cfg.get("tables") or {}).get("reference"):
        _file("tables.reference", cfg.tables.reference,
              "give a CSV of published numbers (experiments/<study>/reference/)")


def _check_judge(cfg: DictConfig) -> None:
    """Judged metrics need a judge; a judge's prompt files must exist; passes > 1 must sample."""
    from omegaconf import OmegaConf

    metrics = OmegaConf.to_container(cfg.get("metrics") or {}, resolve=False)
    judged = [name for name, node in metrics.items() if "${judge." in str(node)]
    judge = cfg.get("judge")
    if judged and judge is None:
        raise ConfigError(f"metrics {', '.join(judged)} need a VLM judge: add judge=qwen25vl_7b "
                          "(or another file of conf/judge/)")
    if judge is not None:
        check_judge(judge)


def check_judge(judge) -> None:
    """A judge config's own checks (attnedit-run and attnedit-judge): its model named, its
    prompt files present, passes that can differ."""
    backend = judge.get("backend") or {}
    if "model" in backend and backend.get("model") in (None, ""):
        raise ConfigError("judge.backend.model is not set: give the judge's model folder or hub id "
                          "(the judge's file in conf/judge/ says where to download it)")
    for benchmark, file in (judge.get("prompts") or {}).items():
        if file is not None:
            _file(f"judge.prompts.{benchmark}", file, "give your copy of the benchmark's official prompt file, "
                  "or null for attnedit's own prompts")
    passes = _integer("judge.passes", judge.get("passes", 1), low=1)
    temperature = (judge.get("backend") or {}).get("temperature", 0.0)
    if passes > 1 and _is_number(temperature) and float(temperature) == 0:
        raise ConfigError(f"judge.passes={passes} with judge.backend.temperature=0 asks the same greedy question "
                          "N times; set judge.backend.temperature (e.g. 0.7) or judge.passes=1")


# -- values ------------------------------------------------------------------------------
def _show(value: Any) -> str:
    """A value as a person would have typed it on the command line."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, (list, tuple)):
        return f"[{','.join(map(_show, value))}]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_show(v)}" for k, v in value.items()) + "}"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(key: str, values: Any) -> list[float]:
    """A non-empty list of distinct finite numbers (an alpha sweep)."""
    if not isinstance(values, (list, tuple, ListConfig)):
        shown = _show(values)
        raise ConfigError(f"{key}: expected a list of numbers, got {shown}; write {key}=[{shown}]")
    if len(values) == 0:
        raise ConfigError(f"{key} is empty; give at least one value, e.g. {key}=[-0.4,0.4]")
    for value in values:
        if not _is_number(value) or not math.isfinite(value):
            raise ConfigError(f"{key}: expected a list of numbers, got {_show(values)} ({_show(value)!r} is not a "
                              f"finite number); write e.g. {key}=[-0.4,0.4]")
    repeated = sorted({float(v) for v in values if sum(float(w) == float(v) for w in values) > 1})
    if repeated:
        raise ConfigError(f"{key}={_show(values)} lists {', '.join(map(str, repeated))} more than once "
                          "(the same cases twice); list each value once")
    return [float(v) for v in values]


def _integer(key: str, value: Any, low: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{key}: expected a whole number, got {_show(value)}; write e.g. {key}={max(low or 0, 1)}")
    if low is not None and value < low:
        raise ConfigError(f"{key}={value} must be >= {low}")
    return value


def _directions(key: str, value: Any) -> None:
    """An int k (the top k) or a list of direction indices."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ConfigError(f"{key}={value} must be >= 1 (the top k directions) or a list of indices, "
                              f"e.g. {key}=[0,2]")
        return
    if not isinstance(value, (list, tuple, ListConfig)) or len(value) == 0 or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise ConfigError(f"{key}: expected a number k (the top k) or a list of indices >= 0, got {_show(value)}; "
                          f"write e.g. {key}=3 or {key}=[0,2]")


def _window(key: str, value: Any) -> None:
    """[lo, hi]: fractions of the sampler's T, 0 <= lo < hi <= 1."""
    if (not isinstance(value, (list, tuple, ListConfig)) or len(value) != 2 or not all(_is_number(v) for v in value)
            or not 0 <= value[0] < value[1] <= 1):
        raise ConfigError(f"{key}: expected [lo,hi] with 0 <= lo < hi <= 1 (fractions of T), got {_show(value)}; "
                          f"write e.g. {key}=[0.5,0.8]")


# -- paths -------------------------------------------------------------------------------
def _folder(key: str, value: Any, holds: str) -> None:
    path = Path(str(value)).expanduser()
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a directory"
        raise ConfigError(f"{key}={value} {what}; point it at {holds}")


def _file(key: str, value: Any, fix: str) -> None:
    path = Path(str(value)).expanduser()
    if not path.is_file():
        what = "does not exist" if not path.exists() else "is not a file"
        raise ConfigError(f"{key}={value} {what}; {fix}")


# -- the device --------------------------------------------------------------------------
def _check_device(cfg: DictConfig) -> None:
    """CUDA asked for where no CUDA driver is: the key the user set (``device``, or
    ``model.device`` set on its own) and the fix. Anything subtler (a CPU-only torch, an
    index past the device count) is the backend's check, after torch is imported."""
    model = cfg.get("model") or {}
    if "device" in model:
        own = not (OmegaConf.is_interpolation(model, "device") and OmegaConf.to_container(
            model, resolve=False).get("device") == "${device}")
        key, device = ("model.device" if own else "device"), model.device
    else:
        key, device = "device", cfg.get("device", "auto")
    if re.fullmatch(r"cuda(:\d+)?", str(device)) and not cuda_driver_present():
        raise ConfigError(f"{key}={device!r} was asked for but CUDA is not available here (no CUDA driver or "
                          f"visible device); use {key}=cpu or {key}=auto")


def cuda_driver_present() -> bool:
    """Whether a CUDA device can exist for this process, known without importing torch:
    the driver library loads and CUDA_VISIBLE_DEVICES does not hide every device. True
    does not promise a device (torch decides that when the model loads)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and (visible.strip() == "" or visible.strip().startswith("-1")):
        return False
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True

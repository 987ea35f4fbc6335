"""Run signature: a short hash of the resolved config minus keys that cannot change results."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Dotted keys that never change a row's numbers: where things go, how fast, who watches.
NON_RESULT_KEYS = (
    "hydra",
    "paths",
    "logger",
    "device",
    "batch_size",
    "shard",
    "claims",
    "progress",
    "save_images",
    "tables",
    "figures",
    "model.device",
    "model.hub_id",  # where the weights are published; model.path (and the weight hash) say what ran
    "model.cpu_offload",
    "method.progress",
    "metrics_batch_size",
    "group",  # W&B only; a multirun sets it per sweep folder, which must not stop a rerun resuming
    "numerical_floor",  # measured into the manifest and table titles, never into rows
)


def resolved_container(cfg: DictConfig | dict) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    return copy.deepcopy(cfg)


def strip_keys(config: dict[str, Any], keys=NON_RESULT_KEYS) -> dict[str, Any]:
    config = copy.deepcopy(config)
    for dotted in keys:
        node, *parents = config, *dotted.split(".")[:-1]
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(dotted.split(".")[-1], None)
    return config


def config_signature(cfg: DictConfig | dict, length: int = 12) -> str:
    payload = json.dumps(strip_keys(resolved_container(cfg)), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:length]

"""Run signature: a short hash of the resolved config, without the keys that cannot change
results and without where the code and the checkout live.

What enters the hash (:func:`signature_payload`): every result key of the resolved config
(a key added later only when it differs from what the code did before it, ADDED_KEYS);
each ``_target_`` as the name of what it builds (``SAD``, not ``attnedit.methods.sad.SAD``),
so moving a module changes no run directory's name; paths inside the checkout or the
package's assets as ``${repo:}/...`` / ``${asset:...}``, so two clones of one revision
name the same config alike. A config group's choice still shows in the hash through its
class and its parameters (``method.name`` included).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from attnedit.config import REPO_ROOT

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
    # VLM judges (``*``: any metric column): where replies are cached, how fast a server is
    # asked, where the prompt files lie (their text enters every judged row's stack hash, so a
    # changed file is refused by the tables, not hidden in a new folder); what the judge is
    # (model, revision, decoding) stays in.
    "judge.cache_dir",
    "metrics.*.cache_dir",
    "judge.prompts",
    "metrics.*.prompts.path",
    *(f"{where}.{key}" for where in ("judge.backend", "metrics.*.backend")
      for key in ("device", "batch_size", "concurrency", "requests_per_minute", "max_retries", "backoff_seconds",
                  "max_backoff_seconds", "timeout_seconds", "api_key_env", "hash_cache")),
)

#: Result keys added after runs were made without them: (dotted key, ``*`` matching one
#: level; the value that does what the code did before the key existed). A key holding
#: that value leaves the hash, so a run directory made before the key still resumes; any
#: other value changes the signature. Add a new result key here with its earlier behaviour.
ADDED_KEYS: tuple[tuple[str, Any], ...] = (
    ("dataset.saved_size", "source"),  # PIE-Bench: edits resized to the source size, then saved, as before the key
    ("model.clip_sample", None),  # null: the checkpoint's scheduler config, as before the key
    ("method.edit_eta", None),  # hspace_pca: null = edits at model.eta, as before the key
    ("label_null", 0),  # Directional CLIP's label-shuffled null: 0 = none, as before the key
    ("metrics.*.label_null", 0),
    ("metrics.*.label_null_seed", 0),
    ("metrics.*.backbone", "facenet"),  # id_sim: FaceNet (VGGFace2), as before the key
    ("metrics.*.arcface_file", None),  # id_sim: only read with backbone=arcface_ir_se50
    ("method.reference", "unedited"),  # pullback: scored against the study's unedited sample, as before the key
)


#: A path to a file the package ships (attnedit/assets/<name>), wherever attnedit lives.
SHIPPED_ASSET = re.compile(r"^/.*/attnedit/assets/(.+)$")


def resolved_container(cfg: DictConfig | dict) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    return copy.deepcopy(cfg)


def strip_keys(config: dict[str, Any], keys=NON_RESULT_KEYS) -> dict[str, Any]:
    """``config`` without the dotted ``keys`` (a ``*`` part matches every key of its level)."""
    config = copy.deepcopy(config)

    def drop(node: Any, parts: list[str]) -> None:
        if not isinstance(node, dict):
            return
        head, rest = parts[0], parts[1:]
        for key in (list(node) if head == "*" else [head] if head in node else []):
            if rest:
                drop(node[key], rest)
            else:
                del node[key]

    for dotted in keys:
        drop(config, dotted.split("."))
    return config


def strip_added_keys(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` without the later keys that hold their earlier behaviour (ADDED_KEYS)."""
    config = copy.deepcopy(config)

    def drop(node: Any, parts: list[str], before: Any) -> None:
        if not isinstance(node, dict):
            return
        head, rest = parts[0], parts[1:]
        for key in (list(node) if head == "*" else [head] if head in node else []):
            if rest:
                drop(node[key], rest, before)
            elif node[key] == before:
                del node[key]

    for dotted, before in ADDED_KEYS:
        drop(config, dotted.split("."), before)
    return config


def without_code_location(value: Any) -> Any:
    """A value with the code's location taken out (module docstring)."""
    if isinstance(value, dict):
        return {k: (str(v).rpartition(".")[2] if k == "_target_" else without_code_location(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [without_code_location(v) for v in value]
    if isinstance(value, str):
        shipped = SHIPPED_ASSET.search(value)  # in this checkout, another clone, or an installed copy
        if shipped:
            return f"${{asset:{shipped[1]}}}"
        root = str(REPO_ROOT)
        if value == root or value.startswith(root + "/"):
            return "${repo:}/" + value[len(root):].lstrip("/")
    return value


def signature_payload(cfg: DictConfig | dict) -> dict[str, Any]:
    """What the signature hashes: the result keys, code locations taken out."""
    return without_code_location(strip_added_keys(strip_keys(resolved_container(cfg))))


def config_signature(cfg: DictConfig | dict, length: int = 12) -> str:
    payload = json.dumps(signature_payload(cfg), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


def same_config_elsewhere(run_dir: Path, config: dict[str, Any]) -> list[Path]:
    """Other run directories beside ``run_dir`` (same experiment name) whose manifest
    records this config under another signature (a directory named by a signature that
    held code locations), which a run of this config would otherwise start over."""
    wanted = signature_payload(config)
    found = []
    for manifest in sorted(Path(run_dir).parent.glob("*/manifest.json")):
        if manifest.parent == Path(run_dir):
            continue
        try:
            recorded = json.loads(manifest.read_text()).get("config")
        except (OSError, ValueError):
            continue
        if isinstance(recorded, dict) and signature_payload(recorded) == wanted:
            found.append(manifest.parent)
    return found

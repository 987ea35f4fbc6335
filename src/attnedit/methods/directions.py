"""SAD editing directions: eigenvectors of C = Wq^T Wq + Wk^T Wk + Wv^T Wv.

W are nn.Linear weights (out x in), so C is (in x in) over the layer's input channels;
with whitened inputs the unit n maximizing sum ||W n||^2 is C's top eigenvector.
Computed in float64, eigenvalues descending, each eigenvector's sign fixed so that its
largest-magnitude entry is positive ("+alpha" means the same on every machine).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from torch import nn

from attnedit.errors import DataError


@dataclass
class LayerDirections:
    eigenvalues: np.ndarray  # (d,) float64, descending
    eigenvectors: np.ndarray  # (d, d) float64, one direction per row

    def share_of_trace(self, k: int) -> np.ndarray:
        return self.eigenvalues[:k] / self.eigenvalues.sum()


def qkv_gram(attn: nn.Module) -> np.ndarray:
    """C = Wq^T Wq + Wk^T Wk + Wv^T Wv in float64."""
    mats = [getattr(attn, n).weight.detach().to("cpu", torch.float64).numpy() for n in ("to_q", "to_k", "to_v")]
    return sum(w.T @ w for w in mats)


def canonical_signs(vectors: np.ndarray) -> np.ndarray:
    """Flip each row so its largest-magnitude entry is positive (ties: the first one)."""
    idx = np.abs(vectors).argmax(axis=1)
    signs = np.sign(vectors[np.arange(len(vectors)), idx])
    signs[signs == 0] = 1.0
    return vectors * signs[:, None]


def sad_directions(attn: nn.Module) -> LayerDirections:
    values, vectors = np.linalg.eigh(qkv_gram(attn))  # ascending, columns
    order = np.argsort(values)[::-1]
    return LayerDirections(values[order], canonical_signs(vectors[:, order].T))


def layer_weight_hash(attn: nn.Module) -> str:
    digest = hashlib.sha256()
    for name in ("to_q", "to_k", "to_v"):
        digest.update(getattr(attn, name).weight.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def compute_directions(
    layers: dict[str, nn.Module], cache_dir: str | Path | None = None
) -> dict[str, LayerDirections]:
    """Directions per layer, read from / written to a cache keyed by the layer's weights."""
    out = {}
    for name, attn in layers.items():
        cache = Path(cache_dir) / f"sad-{layer_weight_hash(attn)}.safetensors" if cache_dir else None
        if cache is not None and cache.exists():
            out[name] = read_directions(cache)["layer"]
            continue
        out[name] = sad_directions(attn)
        if cache is not None:
            write_directions(cache, {"layer": out[name]})
    return out


def write_directions(
    path: str | Path,
    directions: dict[str, LayerDirections],
    labels: dict | None = None,
    weight_hashes: dict[str, str] | None = None,
) -> Path:
    """``<layer>.eigenvalues`` and ``<layer>.eigenvectors`` tensors; labels and the
    hashes of the layer weights they came from in the metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, d in directions.items():
        tensors[f"{name}.eigenvalues"] = np.ascontiguousarray(d.eigenvalues, dtype=np.float64)
        tensors[f"{name}.eigenvectors"] = np.ascontiguousarray(d.eigenvectors, dtype=np.float64)
    metadata = {"format": "attnedit-sad-directions-v1"}
    if labels:
        metadata["labels"] = json.dumps(labels, sort_keys=True)
    if weight_hashes:
        metadata["weight_hashes"] = json.dumps(weight_hashes, sort_keys=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


def read_directions(path: str | Path) -> dict[str, LayerDirections]:
    path = Path(path)
    if not path.exists():
        raise DataError(f"directions file {path} does not exist; create it with `attnedit-directions out={path}`")
    try:
        tensors = load_file(str(path))
    except Exception as err:
        raise DataError(f"directions file {path} is not a readable safetensors file ({err})") from err
    names = sorted({k.rsplit(".", 1)[0] for k in tensors})
    out = {}
    for name in names:
        if f"{name}.eigenvalues" not in tensors or f"{name}.eigenvectors" not in tensors:
            raise DataError(f"directions file {path}: layer '{name}' lacks eigenvalues or eigenvectors")
        out[name] = LayerDirections(tensors[f"{name}.eigenvalues"], tensors[f"{name}.eigenvectors"])
    return out


def read_metadata(path: str | Path, key: str) -> dict:
    """A JSON entry of the file's metadata ("labels", "weight_hashes"); {} if absent."""
    from safetensors import safe_open

    with safe_open(str(path), "np") as handle:
        meta = handle.metadata() or {}
    return json.loads(meta.get(key, "{}"))

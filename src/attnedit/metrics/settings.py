"""What a metric column was computed with, so columns computed differently never pool.

Each metric column records its settings: the metric class, its config (region,
convention/border, network...), its backbone weights (the ``weights`` label and a
fingerprint of the loaded parameters), how edited images are resized, and the images it
scored (8-bit). The run's manifest holds them as ``metric_settings: {column: {...}}``;
every row holds ``metric_settings`` = JSON ``{column: settings hash}``, so rows scored
under different settings (a rescored run resumed with its original config, a rescore
killed part way) are seen and tables refuse to average them (:func:`check_uniform`).

Scored images are 8-bit: the edited image and its reference are rounded to the PNGs
the run saves (PIE-Bench edits: the JPEG files the official scripts save, at the
pipeline's output size, then resized as attnedit-evaluate does, attnedit.run.saved_edits;
the ``images`` setting says which) before they are scored, as the official PIE-Bench evaluator scores the
saved files (cure-lab/PnPInversion @ 07f97f4, evaluation/evaluate.py lines 261 and 270:
``Image.open`` of the source and edited files; evaluation/matrics_calculator.py line
305: ``np.array(img).astype(np.float32)/255``), and so ``attnedit-rescore`` recomputes
a column from the saved images to float precision.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from attnedit.columns import failed_mask
from attnedit.errors import ConfigError
from attnedit.store.signature import NON_RESULT_KEYS, strip_added_keys, strip_keys, without_code_location

#: The row column holding ``{metric column: settings hash}`` as JSON.
SETTINGS_COLUMN = "metric_settings"
#: What the runner and attnedit-rescore score: images rounded to 8 bits, as saved (PNG).
SCORED_IMAGES = "uint8"


def scored_images_label(image_format: str = "png", quality: int = 75, saved_size: str = "source") -> str:
    """The ``images`` entry of a column's settings: "uint8" (PNG, lossless) or "jpeg_q<quality>",
    with "@output_size" where the file holds the model's output at its own size, resized to
    the reference's when scored (PIE-Bench's ``saved_size=output``, attnedit.run.saved_edits)."""
    label = SCORED_IMAGES if image_format == "png" else f"jpeg_q{int(quality)}"
    return label if saved_size == "source" else f"{label}@output_size"


def encode_saved(image: Tensor, image_format: str = "png", quality: int = 75) -> tuple[bytes, Tensor]:
    """One float CHW image as the file the run saves (PNG, or JPEG as PIL's ``save`` writes
    it at ``quality``) and the float image that file decodes to: what is scored."""
    import io

    import numpy as np
    from PIL import Image

    array = image.detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    if image_format == "png":
        Image.fromarray(array).save(buffer, format="PNG")
        decoded = array
    else:
        Image.fromarray(array).save(buffer, format="JPEG", quality=int(quality))
        buffer.seek(0)
        with Image.open(buffer) as saved:
            decoded = np.asarray(saved.convert("RGB"))
    scored = torch.from_numpy(decoded.copy()).permute(2, 0, 1).float().div(255).to(image.device)
    return buffer.getvalue(), scored


def quantize(images: Tensor) -> Tensor:
    """Float images as the 8-bit PNG the run saves reads back: round(255 x) / 255."""
    return images.clamp(0, 1).mul(255).round().div(255)


def weights_fingerprint(metric: Any) -> str | None:
    """A short hash of the metric's backbone parameters (names, shapes, and the first and
    last 4096 values of each tensor: enough to tell checkpoints apart without hashing a
    CLIP ViT-L's 1.7 GB at every run start). None for metrics without a network."""
    modules = [v for v in vars(metric).values() if isinstance(v, torch.nn.Module)]
    if not modules:
        return None
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            flat = tensor.detach().reshape(-1).cpu()
            digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
            for part in (flat[:4096], flat[-4096:]):
                digest.update(part.double().numpy().tobytes() if part.is_floating_point() else part.numpy().tobytes())
    return digest.hexdigest()[:16]


def metric_settings(metric: Any, config: dict[str, Any] | None, images: str = SCORED_IMAGES) -> dict[str, Any]:
    """The settings of one metric's columns (``config``: its resolved config node;
    ``images``: :func:`scored_images_label` of the files scored)."""
    params = {k: v for k, v in (config or {}).items() if k != "_target_"}
    settings = {
        "metric": f"{type(metric).__module__}.{type(metric).__qualname__}",
        "config": params,
        "weights": metric.weights,
        "weights_fingerprint": weights_fingerprint(metric),
        "region": getattr(metric, "region", "whole"),
        "convention": getattr(metric, "convention", getattr(metric, "border", None)),
        "resize": ("bicubic antialiased to the reference size" if _resizes(metric)
                   else "none (sizes must match)"),
        "images": images,
        **(metric.settings_extra() if hasattr(metric, "settings_extra") else {}),  # a judge's stack
    }
    settings["hash"] = settings_hash(settings)
    return settings


def _resizes(metric: Any) -> bool:
    from attnedit.metrics.piebench import PIEBenchMetric

    return isinstance(metric, PIEBenchMetric)


def settings_hash(settings: dict[str, Any]) -> str:
    """A short hash of the settings without where the code and the checkout live (the
    metric class by its name, as the run signature): a moved module pools as before. A
    config key added later that holds its earlier behaviour (the signature's ``metrics.*.<key>``
    ADDED_KEYS) leaves the hash too, so a resumed run's new rows pool with its old ones."""
    located = {k: v for k, v in settings.items() if k != "hash"}
    located["metric"] = str(located.get("metric", "")).rpartition(".")[2]
    if isinstance(located.get("config"), dict):  # later keys at their earlier value; run-time keys (a judge's device)
        nested = strip_keys({"metrics": {"column": located["config"]}}, [k for k in NON_RESULT_KEYS if k.startswith("metrics.")])
        located["config"] = strip_added_keys(nested)["metrics"]["column"]
    payload = json.dumps(without_code_location(located), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def keep_recorded(recorded: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``current`` settings, each replaced by the run's ``recorded`` one where both are the
    same settings: new rows of a resumed run carry the hash its earlier rows carry, also
    when that hash was computed where the metric's module lived then."""
    return {column: recorded[column] if column in recorded and settings_hash(recorded[column]) == settings_hash(s)
            else s for column, s in current.items()}


def all_settings(metrics: list, configs: dict[str, Any] | None, images: str = SCORED_IMAGES) -> dict[str, dict[str, Any]]:
    """``{column: settings}`` of metrics built from the config group ``configs`` (same order)."""
    nodes = list((configs or {}).values())
    out = {}
    for i, m in enumerate(metrics):
        settings = metric_settings(m, nodes[i] if i < len(nodes) else None, images)
        out.update({column: settings for column in m.columns()})  # a metric's columns share its settings
    return out


def row_settings(settings: dict[str, dict[str, Any]]) -> str:
    """The per-row record: JSON ``{column: hash}``."""
    return json.dumps({column: s["hash"] for column, s in settings.items()}, sort_keys=True)


def check_uniform(frame: pd.DataFrame, columns: list[str], where: Any) -> None:
    """Refuse (one line) to average a column whose successful rows were scored under
    different settings. Rows without a record count as one setting."""
    if SETTINGS_COLUMN not in frame or frame.empty:
        return
    rows = frame[~failed_mask(frame)]
    records = [json.loads(v) if isinstance(v, str) else {} for v in rows[SETTINGS_COLUMN]]
    for column in columns:
        hashes = {r.get(column, "not recorded") for r in records}
        if len(hashes) > 1:
            raise ConfigError(
                f"{where}: column '{column}' holds values computed with different settings "
                f"({', '.join(sorted(hashes))}; see manifest.json metric_settings); rescore it whole: "
                f"attnedit-rescore {where} metrics=<the metric group>")

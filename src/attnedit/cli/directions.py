"""``attnedit-directions``: the Hydra app on ``conf/directions.yaml``: SAD directions
(eigenvectors of Wq^T Wq + Wk^T Wk + Wv^T Wv) of a model's self-attention layers into one
safetensors file, optionally named by Directional CLIP (``label=auto``)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from attnedit.cli.console import hydra_app
from attnedit.config import conf_dir
from attnedit.errors import AttneditError


def _directions(cfg: DictConfig) -> None:
    from hydra.utils import instantiate

    from attnedit.backends.layers import select_layers
    from attnedit.methods.auto_labels import label_sad_directions
    from attnedit.methods.directions import compute_directions, layer_weight_hash, write_directions
    from attnedit.store.writable import check_writable_file

    if OmegaConf.is_missing(cfg, "out"):
        raise AttneditError("give the output file: out=<path>.safetensors")
    if cfg.label not in ("none", "auto"):
        raise AttneditError(f"label={cfg.label!r} is not one of none, auto")
    check_writable_file(cfg.out, "out")  # before any computation
    backend = instantiate(cfg.model)
    layers = cfg.layers  # an interpolated default resolves to a plain list
    layers = OmegaConf.to_object(layers) if OmegaConf.is_config(layers) else layers
    layers = select_layers(backend.self_attention_layers(), layers)
    found = compute_directions(layers, Path(cfg.paths.cache_dir) / "directions")
    labels = (label_sad_directions(backend, list(layers), cfg.labeling, str(cfg.paths.cache_dir))
              if cfg.label == "auto" else None)
    hashes = {name: layer_weight_hash(attn) for name, attn in layers.items()}
    path = write_directions(cfg.out, found, labels=labels, weight_hashes=hashes)
    print(f"model: {backend.name} ({backend.path}), weights {backend.describe()['weights_sha256_16']}")
    for name, d in found.items():
        share = d.share_of_trace(cfg.top)
        tops = ", ".join(f"{v:.4g} ({s:.1%})" for v, s in zip(d.eigenvalues[: cfg.top], share))
        print(f"{name}: dim {len(d.eigenvalues)}, top eigenvalues (share of trace): {tops}; "
              f"top {cfg.top} hold {share.sum():.1%}")
    for k, entry in (labels or {}).items():
        print(f"direction {k}: {entry['label']} at {'+' if entry.get('sign', 1) > 0 else '-'}alpha "
              f"(Directional CLIP {entry['score']:.3f}: '{entry['source']}' -> '{entry['target']}')")
    print(f"directions: {Path(path).resolve()}")


def main() -> None:
    hydra_app(_directions, conf_dir, "directions", "choose an out= path in a folder you can write to")

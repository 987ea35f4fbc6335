"""SAD: Self-Attention Decomposition editing (directions from Q/K/V weights alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attnedit.errors import ConfigError
from attnedit.methods.directions import compute_directions, layer_weight_hash, read_directions, read_metadata
from attnedit.methods.injected import DirectionMethod

SAD_MATRIX = "sum_qkv W^T W"  # C over the layer's input channels (W: nn.Linear, out x in)


class SAD(DirectionMethod):
    """Directions = eigenvectors of Wq^T Wq + Wk^T Wk + Wv^T Wv of each selected layer.

    ``directions_file``: optional file written by ``attnedit-directions`` (e.g. with
    automatic labels); its labels fill in any direction not labeled in config.
    """

    def __init__(self, name: str = "sad", directions_file: str | None = None, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.directions_file = directions_file

    def edits(self) -> list[dict[str, Any]]:
        # The matrix whose eigenvectors are the directions, recorded per row: for a square
        # layer W W^T would be another reading (experiments/celebahq_sad/README.md).
        return [{**edit, "sad_matrix": SAD_MATRIX} for edit in super().edits()]

    def discover(self, backend, cache_dir):
        if self.directions_file:
            stored = read_directions(self.directions_file)
            missing = [n for n in self.layers if n not in stored]
            if missing:
                raise ConfigError(f"{self.directions_file} holds no directions for layers {missing}")
            for name, attn in self.layers.items():  # a file of another model: its vectors do not fit
                width, fits = stored[name].eigenvectors.shape[-1], attn.to_q.in_features
                if width != fits:
                    raise ConfigError(
                        f"directions file {self.directions_file}: layer '{name}' holds vectors of width {width}, "
                        f"this model's layer takes {fits} channels; recompute it for this model with "
                        f"`attnedit-directions model=<this model> out={self.directions_file}`"
                    )
            hashes = read_metadata(self.directions_file, "weight_hashes")
            stale = [n for n, attn in self.layers.items() if n in hashes and hashes[n] != layer_weight_hash(attn)]
            if stale:
                raise ConfigError(
                    f"{self.directions_file} was computed from other weights for layers {stale}; "
                    "recompute it with attnedit-directions for this model"
                )
            for k, v in read_metadata(self.directions_file, "labels").items():
                self.labels.setdefault(int(k), v)
            return {n: stored[n] for n in self.layers}
        return compute_directions(self.layers, Path(cache_dir) / "directions" if cache_dir else None)

"""Methods whose edits are (direction index, alpha) added to the inputs of self-attention
layers inside a timestep window (injection.py): SAD and the baselines that differ from it
only in where their directions come from (attention-input PCA, random directions)."""

from __future__ import annotations

import abc
import contextlib
import time
from typing import Any

import numpy as np
import torch

from attnedit.backends.layers import select_layers
from attnedit.errors import ConfigError
from attnedit.methods.base import EditMethod, as_index_list
from attnedit.methods.directions import LayerDirections
from attnedit.methods.injection import WINDOW_BOUNDS, check_injection_options, inject_directions
from attnedit.methods.labeling import case_texts


class DirectionMethod(EditMethod):
    """A method whose edits are (direction index, alpha) injected into attention inputs.

    Subclasses fill ``self.directions`` (layer -> LayerDirections) in :meth:`discover`.
    """

    def __init__(
        self,
        name: str,
        layers: list[str] | str = ("mid_block.attentions.0",),
        directions: list[int] | int = 3,
        alphas: list[float] = (-0.4, -0.2, 0.2, 0.4),
        alpha_scale: str = "token_norm",
        position: str = "after_norm",
        window: tuple[float, float] = (0.5, 0.8),
        labels: dict | None = None,
    ) -> None:
        check_injection_options(position, alpha_scale, tuple(window))
        self.name = name
        self.layer_names = [layers] if isinstance(layers, str) else list(layers)
        self.direction_ids = as_index_list(directions)
        self.alphas = [float(a) for a in alphas]
        self.alpha_scale = alpha_scale
        self.position = position
        self.window = (float(window[0]), float(window[1]))
        self.labels = {int(k): dict(v) for k, v in (labels or {}).items()}
        self.directions: dict[str, LayerDirections] = {}
        self.layers: dict = {}
        self.discovery_seconds = 0.0

    @abc.abstractmethod
    def discover(self, backend, cache_dir: str | None) -> dict[str, LayerDirections]:
        """Directions for every layer in ``self.layers`` (rows unit-norm)."""

    def setup(self, backend, cache_dir: str | None = None) -> None:
        self.layers = select_layers(backend.self_attention_layers(), self.layer_names)
        start = time.perf_counter()
        self.directions = self.discover(backend, cache_dir)
        self.discovery_seconds = time.perf_counter() - start
        for name, d in self.directions.items():
            bad = [k for k in self.direction_ids if not 0 <= k < len(d.eigenvectors)]
            if bad:
                raise ConfigError(f"direction indices {bad} out of range for layer {name} ({len(d.eigenvectors)} directions)")

    def label(self, k: int) -> str:
        return str(self.labels.get(k, {}).get("label", f"dir{k}"))

    def edits(self) -> list[dict[str, Any]]:
        shared = {
            "layers": ",".join(self.layer_names),
            "position": self.position,
            "alpha_scale": self.alpha_scale,
            "window_lo": self.window[0],
            "window_hi": self.window[1],
            "window_bounds": WINDOW_BOUNDS,
        }
        # Texts ordered by each edit's sign (labeling.case_texts): -alpha scores target -> source.
        return [
            {"direction": k, "label": self.label(k), "alpha": a, **shared, **case_texts(self.labels.get(k), a)}
            for k in self.direction_ids
            for a in self.alphas
        ]

    def texts(self, k: int) -> tuple[str | None, str | None]:
        """Direction k's label texts as stored (the change at the label's sign)."""
        entry = self.labels.get(k, {})
        return entry.get("source"), entry.get("target")

    def is_identity(self, edit: dict[str, Any]) -> bool:
        return float(edit["alpha"]) == 0.0  # delta = 0 * (n or ||Z|| n): Z unchanged

    @contextlib.contextmanager
    def control(self, backend, edits):
        vectors = {
            name: torch.from_numpy(np.stack([d.eigenvectors[e["direction"]] for e in edits])).float()
            for name, d in self.directions.items()
        }
        alphas = torch.tensor([e["alpha"] for e in edits], dtype=torch.float32)
        with inject_directions(
            backend.unet,
            self.layers,
            vectors,
            alphas,
            num_train_timesteps=backend.num_train_timesteps,
            window=self.window,
            position=self.position,
            alpha_scale=self.alpha_scale,
            timesteps=backend.timesteps(),
        ) as state:
            yield state

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layers": self.layer_names,
            "directions": self.direction_ids,
            "labels": {k: self.labels.get(k) for k in self.direction_ids},
            "discovery_seconds": self.discovery_seconds,
            "top_eigenvalues": {n: d.eigenvalues[:5].tolist() for n, d in self.directions.items()},
        }

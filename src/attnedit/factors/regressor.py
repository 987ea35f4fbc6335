"""A small CNN that reads the six generative factors off a shapes image.

Outputs: shape logits (3), hue as (cos, sin) of its angle, and the other continuous
factors scaled to [0, 1] over their prior ranges. :meth:`FactorRegressor.predict` turns
them back into factor values (hue in turns) plus the shape probabilities.
Trained by experiments/shapes_ddpm/train_regressor.py; shipped as a safetensors file
with its config in ``attnedit/assets/shapes_regressor``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from attnedit.data.shapes import FACTOR_RANGES, SHAPES, ShapeFactors
from attnedit.errors import WeightsNotFoundError

LINEAR_FACTORS = tuple(k for k in FACTOR_RANGES if k != "hue")  # size, pos_x, pos_y, background
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


class FactorRegressor(nn.Module):
    def __init__(self, resolution: int = 32, width: int = 16) -> None:
        super().__init__()
        self.config = {"resolution": resolution, "width": width}

        def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU()]

        w = width
        self.features = nn.Sequential(
            *block(3, w, 1), *block(w, 2 * w, 2), *block(2 * w, 2 * w, 1),
            *block(2 * w, 4 * w, 2), *block(4 * w, 4 * w, 2), nn.Flatten(),
        )  # fmt: skip
        flat = 4 * w * (resolution // 8) ** 2
        self.head = nn.Sequential(nn.Linear(flat, 256), nn.SiLU(), nn.Linear(256, len(SHAPES) + 2 + len(LINEAR_FACTORS)))

    def forward(self, images: Tensor) -> Tensor:
        """images in [0, 1], NCHW -> raw outputs [N, 3 + 2 + 4]."""
        return self.head(self.features(images * 2 - 1))

    @torch.no_grad()
    def predict(self, images: Tensor) -> dict[str, np.ndarray]:
        """Factor values (float64) and ``shape_probs`` [N, 3] for images in [0, 1]."""
        out = self(images.float()).double()
        k = len(SHAPES)
        probs = out[:, :k].softmax(-1)
        hue = torch.atan2(out[:, k + 1], out[:, k]) / (2 * math.pi) % 1.0
        values = {"shape": probs.argmax(-1).numpy(), "hue": hue.numpy(), "shape_probs": probs.numpy()}
        for i, name in enumerate(LINEAR_FACTORS):
            low, high = FACTOR_RANGES[name]
            values[name] = (low + (high - low) * out[:, k + 2 + i]).numpy()
        return values

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(json.dumps(self.config, indent=1) + "\n")
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, folder / WEIGHTS_FILE)


def targets(factors: ShapeFactors) -> tuple[Tensor, Tensor]:
    """(shape labels, regression targets [N, 2 + 4]) in the layout of the outputs."""
    angle = 2 * np.pi * factors.hue
    columns = [np.cos(angle), np.sin(angle)]
    for name in LINEAR_FACTORS:
        low, high = FACTOR_RANGES[name]
        columns.append((getattr(factors, name) - low) / (high - low))
    return torch.from_numpy(factors.shape).long(), torch.from_numpy(np.stack(columns, 1)).float()


def as_factors(predicted: dict[str, np.ndarray]) -> ShapeFactors:
    return ShapeFactors(**{k: v for k, v in predicted.items() if k != "shape_probs"})


def load_regressor(path: str | Path) -> FactorRegressor:
    """The regressor saved in ``path`` (config.json + model.safetensors), in eval mode."""
    from safetensors.torch import load_file

    folder = Path(path)
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise WeightsNotFoundError(
            f"factor regressor: {folder} lacks {CONFIG_FILE} or {WEIGHTS_FILE}; attnedit ships it in "
            "attnedit/assets/shapes_regressor (retrain: experiments/shapes_ddpm/train_regressor.py)."
        )
    model = FactorRegressor(**json.loads((folder / CONFIG_FILE).read_text()))
    model.load_state_dict(load_file(folder / WEIGHTS_FILE))
    return model.eval().requires_grad_(False)

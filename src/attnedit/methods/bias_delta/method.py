"""GRAG / DCAG as an edit method: a grid of scales, one case per grid point."""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from attnedit.errors import ConfigError
from attnedit.methods.base import EditMethod
from attnedit.methods.bias_delta.guidance import bias_delta_guidance
from attnedit.methods.bias_delta.params import ARITHMETIC, BRANCHES, PARAMS


class BiasDelta(EditMethod):
    """GRAG / DCAG as an edit method: a grid of scales, one case per grid point.

    ``grid`` maps any of dk, dv, bk, bv, dq, bq to a value or a list of values (absent
    keys are 1); :meth:`edits` is their cartesian product in that key order. ``blocks``,
    ``steps`` and ``branches`` are as in :func:`bias_delta_guidance`. A method named
    "grag" must keep the Value channel at identity (dv = bv = 1). A (1, 1) point is
    never skipped as an identity: under ``arithmetic="official"`` it is the official
    scripts' unguided row (their rescale rounds even there); under "fused" it equals the
    stock processor bit for bit.
    """

    def __init__(
        self,
        name: str = "dcag",
        grid: Mapping[str, Any] | None = None,
        blocks: Sequence[int] | None = None,
        steps: Sequence[int] | Mapping[str, float] | None = None,
        branches: str = "both",
        arithmetic: str = "fused",
    ) -> None:
        self.name = name
        grid = dict(grid or {})
        unknown = sorted(set(grid) - set(PARAMS))
        if unknown:
            raise ConfigError(f"method '{name}': unknown grid keys {unknown}; use {list(PARAMS)}")
        self.grid = {p: [float(v) for v in _as_list(grid.get(p, 1.0))] for p in PARAMS}
        for p, values in self.grid.items():
            if not values or not all(math.isfinite(v) for v in values):
                raise ConfigError(f"method '{name}': grid.{p}={values} must be a non-empty list of finite numbers")
        if name == "grag" and any(v != 1.0 for v in self.grid["dv"] + self.grid["bv"]):
            raise ConfigError("method 'grag' is key-only guidance: grid.dv and grid.bv must be 1 (use dcag for dv)")
        if branches not in BRANCHES:
            raise ConfigError(f"method '{name}': branches={branches!r} is not one of {BRANCHES}")
        self.blocks = None if blocks is None else [int(b) for b in _as_list(blocks)]
        self.steps = None if steps is None else (dict(steps) if isinstance(steps, Mapping)
                                                 else [int(s) for s in _as_list(steps)])
        self.branches = branches
        if arithmetic not in ARITHMETIC:
            raise ConfigError(f"method '{name}': arithmetic={arithmetic!r} is not one of {ARITHMETIC}")
        if arithmetic == "official" and any(v != 1.0 for v in self.grid["dq"] + self.grid["bq"]):
            raise ConfigError(f"method '{name}': the official scripts have no Query rescale; "
                              "grid.dq and grid.bq need arithmetic=fused")
        self.arithmetic = arithmetic

    def edits(self) -> list[dict[str, Any]]:
        return [{**dict(zip(PARAMS, combo)), "guidance_arithmetic": self.arithmetic}
                for combo in itertools.product(*(self.grid[p] for p in PARAMS))]

    def control(self, backend, edits: list[dict[str, Any]]) -> contextlib.AbstractContextManager:
        per_sample = {p: [float(e.get(p, 1.0)) for e in edits] for p in PARAMS}
        return bias_delta_guidance(
            backend.transformer,
            **per_sample,
            blocks=self.blocks,
            steps=self.steps,
            branches=self.branches,
            num_steps=getattr(backend, "num_inference_steps", None),
            arithmetic=self.arithmetic,
        )

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "grid": self.grid, "blocks": self.blocks, "steps": self.steps,
                "branches": self.branches, "arithmetic": self.arithmetic}


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)

"""GRAG / DCAG as an edit method (methods/bias_delta/method.py): its grid of scales and the
guidance its control installs, on a tiny QwenImageTransformer2DModel."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from diffusers.models.transformers.transformer_qwenimage import QwenDoubleStreamAttnProcessor2_0

from attnedit.errors import ConfigError
from attnedit.methods.bias_delta.guidance import bias_delta_guidance
from attnedit.methods.bias_delta.method import BiasDelta
from guided_transformers import make_inputs, processors, run

ARCH = "qwen"


def test_method_grid_and_control(transformer):
    method = BiasDelta(name="dcag", grid={"dk": [1.10, 1.15], "dv": [1.0, 1.15]})
    edits = method.edits()
    assert [(e["dk"], e["dv"]) for e in edits] == [(1.10, 1.0), (1.10, 1.15), (1.15, 1.0), (1.15, 1.15)]
    assert all(set(e) == {"dk", "dv", "bk", "bv", "dq", "bq", "guidance_arithmetic"} for e in edits)
    assert all(e["bk"] == e["bq"] == 1.0 and e["guidance_arithmetic"] == "fused" for e in edits)
    backend = SimpleNamespace(transformer=transformer, num_inference_steps=3)
    inputs = make_inputs(ARCH, 2, pad=False)
    with method.control(backend, edits[1:3]):
        got = run(transformer, inputs)
    with bias_delta_guidance(transformer, dk=[1.10, 1.15], dv=[1.15, 1.0]):
        want = run(transformer, inputs)
    assert torch.equal(got, want)
    assert all(type(p) is QwenDoubleStreamAttnProcessor2_0 for p in processors(transformer))
    with pytest.raises(ConfigError, match="grag"):
        BiasDelta(name="grag", grid={"dk": [1.1], "dv": [1.15]})
    with pytest.raises(ConfigError, match="unknown grid keys"):
        BiasDelta(grid={"dx": [1.0]})
    assert [e["dk"] for e in BiasDelta(name="grag", grid={"dk": [1.1, 1.15]}).edits()] == [1.1, 1.15]

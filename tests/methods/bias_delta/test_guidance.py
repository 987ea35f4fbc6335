"""bias_delta_guidance (methods/bias_delta/guidance.py) on a tiny QwenImageTransformer2DModel:
processors and hooks installed and restored, errors that leave the model untouched, and
the selection of blocks, branches (cache_context) and denoising steps."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.transformers.transformer_qwenimage import QwenDoubleStreamAttnProcessor2_0

from attnedit.errors import ConfigError
from attnedit.methods.bias_delta.guidance import bias_delta_guidance
from attnedit.methods.bias_delta.qwen import BiasDeltaAttnProcessor
from guided_transformers import make_inputs, processors, run

ARCH = "qwen"


def test_restores_processors_and_hooks_after_exception(transformer):
    before = processors(transformer)
    inputs = make_inputs(ARCH, 1)
    stock = run(transformer, inputs)
    with pytest.raises(RuntimeError, match="boom"):
        with bias_delta_guidance(transformer, dk=1.3, dv=1.2):
            assert all(isinstance(p, BiasDeltaAttnProcessor) for p in processors(transformer))
            raise RuntimeError("boom")
    assert all(a is b for a, b in zip(processors(transformer), before))
    assert not transformer._forward_pre_hooks and not transformer._forward_hooks
    assert "cache_context" not in vars(transformer)
    assert torch.equal(run(transformer, inputs), stock)


def test_failed_install_leaves_model_untouched(transformer):
    before = processors(transformer)
    with pytest.raises(ConfigError, match="out of range"):
        with bias_delta_guidance(transformer, dk=1.2, blocks=[0, 5]):
            pass
    with pytest.raises(ConfigError, match="different lengths"):
        with bias_delta_guidance(transformer, dk=[1.1, 1.2], dv=[1.0, 1.1, 1.2]):
            pass
    with bias_delta_guidance(transformer, dk=[1.1, 1.2, 1.3]):  # 3 scales, batch of 1
        with pytest.raises(ConfigError, match="batch holds 1"):
            run(transformer, make_inputs(ARCH, 1))
    with bias_delta_guidance(transformer, dk=1.1):
        with pytest.raises(ConfigError, match="image tokens"):
            run(transformer, {**make_inputs(ARCH, 1), "img_shapes": [[(1, 4, 4), (1, 3, 4)]]})
        with pytest.raises(ConfigError, match="already installed"):
            with bias_delta_guidance(transformer, dk=1.2):
                pass
    assert all(a is b for a, b in zip(processors(transformer), before))
    assert all(type(p) is QwenDoubleStreamAttnProcessor2_0 for p in before)
    assert not transformer._forward_pre_hooks and not transformer._forward_hooks


def test_block_selection(transformer):
    inputs = make_inputs(ARCH, 1)
    stock = run(transformer, inputs)
    with bias_delta_guidance(transformer, dk=1.3, blocks=[-1]):
        kinds = [type(p) for p in processors(transformer)]
        out = run(transformer, inputs)
    assert kinds == [QwenDoubleStreamAttnProcessor2_0, BiasDeltaAttnProcessor]
    assert not torch.allclose(out, stock)


def test_branch_selection_follows_cache_context(transformer):
    inputs = make_inputs(ARCH, 1)
    stock = run(transformer, inputs)
    with bias_delta_guidance(transformer, dk=1.3, dv=1.2, branches="cond") as g:
        with transformer.cache_context("uncond"):
            uncond = run(transformer, inputs)
        with transformer.cache_context("cond"):
            cond = run(transformer, inputs)
        with pytest.raises(ConfigError, match="cache_context"):
            run(transformer, inputs)  # unlabelled call: cond or uncond cannot be told
    assert torch.equal(uncond, stock) and not torch.allclose(cond, stock)
    assert [(e["branch"], e["guided"]) for e in g.log[:2]] == [("uncond", False), ("cond", True)]
    with pytest.raises(ConfigError, match="branches"):
        with bias_delta_guidance(transformer, branches="negative"):
            pass


def test_step_selection_counts_denoising_steps(transformer):
    base = make_inputs(ARCH, 1)
    timesteps = [1.0, 1.0, 0.6, 0.6, 0.3, 0.3, 1.0]  # cond/uncond per step, then a new run
    stock = [run(transformer, {**base, "timestep": torch.tensor([t])}) for t in timesteps]
    for steps, num_steps, expected in [([1], None, [0, 0, 1, 1, 0, 0, 0]),
                                       ({"start": 0.3, "end": 1.0}, 3, [0, 0, 1, 1, 1, 1, 0])]:
        with bias_delta_guidance(transformer, dk=1.3, steps=steps, num_steps=num_steps) as g:
            outs = [run(transformer, {**base, "timestep": torch.tensor([t])}) for t in timesteps]
        assert [e["step"] for e in g.log] == [0, 0, 1, 1, 2, 2, 0]
        assert [int(e["guided"]) for e in g.log] == expected
        changed = [int(not torch.equal(o, s)) for o, s in zip(outs, stock)]
        assert changed == expected
    with pytest.raises(ConfigError, match="num_steps"):
        with bias_delta_guidance(transformer, steps={"start": 0.0, "end": 0.5}):
            pass

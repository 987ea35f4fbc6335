"""The guided Qwen double-stream processor (methods/bias_delta/qwen.py) on a tiny
QwenImageTransformer2DModel.

Every expected value comes from the stock diffusers processor or from a float64
re-implementation of the attention block written from the module weights
(guided_transformers.reference_attention).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from diffusers.models.transformers import transformer_qwenimage

from attention_recorder import record_attention
from attnedit.methods.bias_delta.guidance import bias_delta_guidance
from guided_transformers import SCALES, capture, make_inputs, pick, reference_attention, run

ARCH = "qwen"


@pytest.mark.parametrize("shapes", [((1, 4, 4), (1, 3, 5)), ((1, 2, 6), (1, 4, 4)), ((1, 4, 6), (1, 6, 4))])
@pytest.mark.parametrize("guided", [False, True])
def test_block_matches_reference_formula(transformer, shapes, guided):
    noisy, cond = shapes
    inputs = make_inputs(ARCH, 2, noisy, cond)
    scales = SCALES if guided else {k: [1.0, 1.0] for k in SCALES}
    if guided:
        with bias_delta_guidance(transformer, **scales):
            attn, kw, (img, txt) = capture(transformer, 1, inputs)
    else:  # the stock processor against the same reference: validates the reference itself
        attn, kw, (img, txt) = capture(transformer, 1, inputs)
    scales = {k: torch.tensor(v) for k, v in scales.items()}
    ref_img, ref_txt = reference_attention(ARCH, attn, kw, math.prod(cond), scales)
    torch.testing.assert_close(img.double(), ref_img, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(txt.double(), ref_txt, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_identity_is_bitwise_stock(transformer, dtype):
    if dtype != torch.float32:
        transformer = copy.deepcopy(transformer).to(dtype)
    inputs = {k: (v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v)
              for k, v in make_inputs(ARCH, 2).items()}
    stock = run(transformer, inputs)
    with bias_delta_guidance(transformer):
        assert torch.equal(run(transformer, inputs), stock)
    # sample 0 at (1, 1) goes through the guided arithmetic because sample 1 is not identity
    with bias_delta_guidance(transformer, dk=[1.0, 1.3], dv=[1.0, 0.7], dq=[1.0, 1.2]) as g:
        mixed = run(transformer, inputs)
    assert g.log and all(entry["guided"] for entry in g.log)
    assert torch.equal(mixed[0], stock[0])
    assert not torch.allclose(mixed[1], stock[1])


def test_batch_equals_single_runs(transformer):
    inputs = make_inputs(ARCH, 2, pad=False)
    dk, dv = [1.1, 0.85], [1.15, 1.3]
    with bias_delta_guidance(transformer, dk=torch.tensor(dk), dv=dv):
        batched = run(transformer, inputs)
    for i in range(2):
        with bias_delta_guidance(transformer, dk=dk[i], dv=dv[i]):
            single = run(transformer, pick(inputs, i))
        # outputs are ~10 in size; the stock model itself differs by ~2e-5 between batch and single
        torch.testing.assert_close(batched[i:i + 1], single, rtol=1e-5, atol=1e-4)
    assert (batched[0] - run(transformer, pick(inputs, 0))[0]).abs().max() > 1e-2


def test_only_condition_tokens_change(transformer, monkeypatch):
    calls = record_attention(monkeypatch, transformer_qwenimage)
    noisy, cond, text = (1, 4, 4), (1, 3, 5), 7
    inputs = make_inputs(ARCH, 1, noisy, cond, text)
    run(transformer, inputs)
    stock = calls[0]  # block 0: both runs see identical inputs there
    calls.clear()
    with bias_delta_guidance(transformer, dk=1.2, dv=1.15, dq=1.1, blocks=[0]):
        run(transformer, inputs)
    guided = calls[0]
    first_cond = text + math.prod(noisy)
    for name, s, g in zip("QKV", stock, guided):
        assert torch.equal(s[:, :first_cond], g[:, :first_cond]), f"{name}: text or noisy tokens changed"
        assert not torch.allclose(s[:, first_cond:], g[:, first_cond:]), f"{name}: condition tokens unchanged"
    calls.clear()
    with bias_delta_guidance(transformer, dk=1.2, blocks=[0]):  # key only: Q and V untouched
        run(transformer, inputs)
    assert torch.equal(calls[0][0], stock[0]) and torch.equal(calls[0][2], stock[2])
    assert not torch.equal(calls[0][1], stock[1])

"""The guided Flux processor (methods/bias_delta/flux.py) on a tiny FluxTransformer2DModel
(double- and single-stream blocks), as FLUX.1 Kontext calls it.

Expected values come from the stock diffusers processor or from a float64
re-implementation of the attention written from the module weights
(guided_transformers.reference_attention).
"""

from __future__ import annotations

import math

import pytest
import torch
from diffusers.models.transformers import transformer_flux
from diffusers.models.transformers.transformer_flux import FluxAttnProcessor

from attention_recorder import record_attention
from attnedit.errors import ConfigError
from attnedit.methods.bias_delta.flux import FluxBiasDeltaAttnProcessor
from attnedit.methods.bias_delta.guidance import bias_delta_guidance
from guided_transformers import SCALES, attentions, capture, grid_ids, make_inputs, pick, reference_attention, run

ARCH = "flux"


@pytest.mark.parametrize("index", [0, 1, 2])  # the double-stream block, then both single-stream ones
@pytest.mark.parametrize("guided", [False, True])
def test_attention_matches_reference_formula(transformer, index, guided):
    noisy, cond = (4, 4), (3, 5)  # a non-square condition image
    inputs = make_inputs(ARCH, 2, noisy, cond)
    scales = SCALES if guided else {k: [1.0, 1.0] for k in SCALES}
    if guided:
        with bias_delta_guidance(transformer, **scales):
            attn, kw, outs = capture(transformer, index, inputs)
    else:  # the stock processor against the same reference: validates the reference itself
        attn, kw, outs = capture(transformer, index, inputs)
    expected = reference_attention(ARCH, attn, kw, math.prod(cond), {k: torch.tensor(v) for k, v in scales.items()})
    assert len(outs) == len(expected) == (2 if index == 0 else 1)
    for got, want in zip(outs, expected):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_identity_is_bitwise_stock_and_processors_come_back(transformer):
    inputs = make_inputs(ARCH, 2)
    stock = run(transformer, inputs)
    with bias_delta_guidance(transformer) as g:
        assert all(isinstance(a.processor, FluxBiasDeltaAttnProcessor) for a in attentions(transformer))
        assert torch.equal(run(transformer, inputs), stock)
    assert g.log == [{"branch": None, "step": None, "guided": True, "condition_tokens": 15}]
    assert all(type(a.processor) is FluxAttnProcessor for a in attentions(transformer))
    with bias_delta_guidance(transformer, dk=[1.0, 1.3], dv=[1.0, 0.7]):  # sample 0 through the guided arithmetic
        mixed = run(transformer, inputs)
    assert torch.equal(mixed[0], stock[0]) and not torch.allclose(mixed[1], stock[1])


def test_batch_equals_single_runs(transformer):
    inputs = make_inputs(ARCH, 2)
    dk, dv = [1.1, 0.85], [1.15, 1.3]
    with bias_delta_guidance(transformer, dk=dk, dv=dv):
        batched = run(transformer, inputs)
    for i in range(2):
        with bias_delta_guidance(transformer, dk=dk[i], dv=dv[i]):
            single = run(transformer, pick(inputs, i))
        torch.testing.assert_close(batched[i : i + 1], single, rtol=1e-5, atol=1e-5)
    assert (batched[0] - run(transformer, pick(inputs, 0))[0]).abs().max() > 1e-2


def test_only_condition_tokens_change_and_blocks_count_single_stream_last(transformer, monkeypatch):
    calls = record_attention(monkeypatch, transformer_flux)
    noisy, cond, text = (4, 4), (3, 5), 6
    inputs = make_inputs(ARCH, 1, noisy, cond, text)
    run(transformer, inputs)
    stock = list(calls)
    calls.clear()
    with bias_delta_guidance(transformer, dk=1.2, dv=1.15, dq=1.1, blocks=[-1]):  # the last single-stream block
        run(transformer, inputs)
    first_cond = text + math.prod(noisy)
    # one attention call per block (1 double-stream, then 2 single-stream), each of the whole joint sequence:
    # a recording that misses a call (or all of them) must fail here, not pass the loop below empty
    blocks = transformer.config.num_layers + transformer.config.num_single_layers
    assert blocks == 3 and len(stock) == blocks, f"stock run: {len(stock)} attention calls recorded"
    assert len(calls) == blocks, f"guided run: {len(calls)} attention calls recorded, {blocks} blocks"
    for recorded in (*stock, *calls):
        assert len(recorded) == 3 and all(t.shape[1] == first_cond + math.prod(cond) for t in recorded)
    for i, (s, g) in enumerate(zip(stock, calls)):
        for name, a, b in zip("QKV", s, g):
            if i < 2:  # blocks before the guided one see identical inputs
                assert torch.equal(a, b), f"attention {i} {name} changed"
            else:
                assert torch.equal(a[:, :first_cond], b[:, :first_cond]), f"{name}: text or noisy tokens changed"
                assert not torch.allclose(a[:, first_cond:], b[:, first_cond:]), f"{name}: condition tokens unchanged"


def test_condition_tokens_come_from_img_ids(transformer):
    inputs = make_inputs(ARCH, 1)
    no_condition = dict(inputs, hidden_states=inputs["hidden_states"][:, :16], img_ids=grid_ids(0, 4, 4))
    with bias_delta_guidance(transformer, dk=1.3) as g:  # plain Flux: nothing to guide, stock output
        assert torch.equal(run(transformer, no_condition), transformer(**no_condition)[0])
    assert g.log[0]["guided"] is False and g.log[0]["condition_tokens"] == 0
    shuffled = dict(inputs, img_ids=inputs["img_ids"].flip(0))  # condition tokens first: not Kontext's layout
    with pytest.raises(ConfigError, match="not the last tokens"), bias_delta_guidance(transformer, dk=1.3):
        run(transformer, shuffled)
    with pytest.raises(ConfigError, match="without img_ids"), bias_delta_guidance(transformer, dk=1.3):
        run(transformer, dict(inputs, img_ids=None))
    assert all(type(a.processor) is FluxAttnProcessor for a in attentions(transformer))
    with pytest.raises(ConfigError, match="FluxKontextPipeline does not"), \
            bias_delta_guidance(transformer, dk=1.3, branches="cond"):
        run(transformer, inputs)

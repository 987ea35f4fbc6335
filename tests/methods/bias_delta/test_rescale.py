"""The rescale of the condition tokens (methods/bias_delta/rescale.py), both arithmetics,
on a tiny QwenImageTransformer2DModel: the fused in-place pass against the straightforward
implementation that benchmarks/bench_bias_delta.py measures it with (a float32 copy of the
condition tokens, four element-wise passes, a concatenation), the official scripts'
expression against their lines, and the per-call state that applies them."""

from __future__ import annotations

import copy
import math
import sys

import pytest
import torch
from diffusers.models.transformers import transformer_qwenimage

from attention_recorder import record_attention
from attnedit.errors import ConfigError
from attnedit.methods.bias_delta.guidance import bias_delta_guidance
from attnedit.methods.bias_delta.method import BiasDelta
from attnedit.methods.bias_delta.rescale import bias_delta_
from guided_transformers import SCALES, make_inputs, official_block, run
from harness import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from bench_bias_delta import legacy_bias_delta, legacy_guidance  # noqa: E402

ARCH = "qwen"


def test_official_arithmetic_is_the_official_scripts_expression(transformer, monkeypatch):
    """arithmetic='official' against the official lines applied to the stock run's Q/K/V of
    block 0 (identical inputs there), bit for bit in bfloat16; fused at (1, 1) is the stock
    output, official is not (its identity rescale rounds), and the two arithmetics differ
    by bfloat16 rounding only."""
    model = copy.deepcopy(transformer).to(torch.bfloat16)
    noisy, cond, text = (1, 4, 4), (1, 3, 5), 7
    inputs = {k: (v.to(torch.bfloat16) if torch.is_tensor(v) and v.is_floating_point() else v)
              for k, v in make_inputs(ARCH, 1, noisy, cond, text, pad=False).items()}
    calls = record_attention(monkeypatch, transformer_qwenimage)
    stock_out = run(model, inputs)
    q, k, v = calls[0]
    length, split = math.prod(cond), text
    for scales in ({"dk": 1.0, "dv": 1.0}, {"dk": 1.3, "dv": 1.0, "bk": 0.9}, {"dk": 1.1, "dv": 1.15}):
        calls.clear()
        with bias_delta_guidance(model, arithmetic="official", blocks=[0], **scales):
            official_out = run(model, inputs)
        gq, gk, gv = calls[0]
        want_k = official_block((k[:, :split].clone(), k[:, split:].clone()), 512, length,
                                scales.get("bk", 1.0), scales["dk"], text=True)
        assert torch.equal(gq, q)
        assert torch.equal(gk, want_k)
        if scales["dv"] == 1.0:  # the official code skips V at (bv, dv) = (1, 1)
            assert torch.equal(gv, v)
        else:
            assert torch.equal(gv, official_block((v[:, :split].clone(), v[:, split:].clone()), 512, length,
                                                  1.0, scales["dv"]))
        assert not torch.equal(gk, k)  # even (1, 1) rounds the keys
        with bias_delta_guidance(model, arithmetic="fused", blocks=[0], **scales):
            fused_out = run(model, inputs)
        if scales == {"dk": 1.0, "dv": 1.0}:
            assert torch.equal(fused_out, stock_out) and not torch.equal(official_out, stock_out)
        else:  # bfloat16 rounding apart, much less than what the guidance itself changes
            rounding = (official_out.float() - fused_out.float()).abs().max()
            assert rounding < 0.25 * (fused_out.float() - stock_out.float()).abs().max()
    with pytest.raises(ConfigError, match="no Query rescale"), \
            bias_delta_guidance(model, arithmetic="official", dq=1.1):
        pass
    with pytest.raises(ConfigError, match="arithmetic='exact' is not one of"), \
            bias_delta_guidance(model, arithmetic="exact"):
        pass
    assert BiasDelta(grid={"dk": [1.1]}, arithmetic="official").edits()[0]["guidance_arithmetic"] == "official"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_rescale_matches_the_straightforward_implementation(dtype):
    gen = torch.Generator().manual_seed(5)
    x = (torch.randn(3, 40, 4, 16, generator=gen) * 3 + 1).to(dtype)  # mean != 0: the bias term matters
    delta, bias = torch.tensor([1.0, 1.2, 0.85]), torch.tensor([1.0, 1.1, 0.9])
    want = legacy_bias_delta(x, 15, delta, bias)
    got = x.clone()
    out = bias_delta_(got, 25, delta.view(-1, 1, 1, 1), (bias - delta).view(-1, 1, 1, 1))
    assert out is got  # in place: no clone, no cat
    assert torch.equal(got[:, :15], x[:, :15]) and torch.equal(got[0], x[0])  # (1, 1) leaves sample 0 bitwise
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    else:  # both round a float32 result once; they differ by at most one bfloat16 step
        torch.testing.assert_close(got.float(), want.float(), rtol=2 ** -7, atol=0)
    assert (got[1:].float() - x[1:].float()).abs().max() > 0.1


def test_guided_transformer_matches_the_straightforward_implementation(transformer):
    inputs = make_inputs(ARCH, 2)
    with bias_delta_guidance(transformer, **SCALES):
        fused = run(transformer, inputs)
    with legacy_guidance(transformer, **SCALES):  # the guidance with the straightforward arithmetic
        straightforward = run(transformer, inputs)
    # float32 rounding of two equal formulas, carried through two blocks: within 1e-6 of the output's scale
    # (measured 3.8e-6 to 7.6e-6 on outputs up to 28); the guidance itself moves the output by > 1e-2
    assert (fused - straightforward).abs().max() <= 1e-6 * fused.abs().max()
    assert (fused - run(transformer, inputs)).abs().max() > 1e-2


def test_per_call_state_is_built_once_and_rescales_in_place(transformer, monkeypatch):
    calls = record_attention(monkeypatch, transformer_qwenimage)
    seen = []
    with bias_delta_guidance(transformer, dk=[1.2, 1.0], dv=1.15) as guidance:
        def spy(module, args, output):
            seen.append(guidance.call)

        handle = transformer.register_forward_hook(spy, prepend=True)  # runs before the guidance clears it
        try:
            run(transformer, make_inputs(ARCH, 2))
            run(transformer, make_inputs(ARCH, 2, seed=3))
        finally:
            handle.remove()
    assert len(seen) == 2
    # the device copies of the scales are made once, not per call or per block
    assert all(a is b for (_, a, _), (_, b, _) in zip(seen[0].factors, seen[1].factors))
    assert [i for i, _, _ in seen[0].factors] == [1, 2]  # key, value; the identity query is skipped
    assert len(calls) == 4  # two blocks per call reached the attention

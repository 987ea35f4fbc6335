"""Bias-delta guidance (GRAG / DCAG) on a tiny QwenImageTransformer2DModel.

Every expected value comes from the stock diffusers processor or from a float64
re-implementation of the attention block written here from the module weights.
"""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers import QwenImageTransformer2DModel
from diffusers.models.transformers import transformer_qwenimage
from diffusers.models.transformers.transformer_qwenimage import QwenDoubleStreamAttnProcessor2_0

from attnedit.errors import ConfigError
from attention_recorder import record_attention
from attnedit.methods.bias_delta.guidance import bias_delta_guidance
from attnedit.methods.bias_delta.method import BiasDelta
from attnedit.methods.bias_delta.qwen import BiasDeltaAttnProcessor
from attnedit.methods.bias_delta.rescale import bias_delta_

TEXT_DIM = 24
HEADS, HEAD_DIM = 2, 16


@pytest.fixture(scope="module")
def transformer():
    torch.manual_seed(0)
    model = QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=HEAD_DIM,
        num_attention_heads=HEADS, joint_attention_dim=TEXT_DIM, axes_dims_rope=(4, 6, 6),
    ).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial weights everywhere (gates and norms included)
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3 + (1.0 if p.ndim == 1 and p.shape[0] == HEAD_DIM else 0.0))
    return model


def make_inputs(batch, noisy=(1, 4, 4), cond=(1, 3, 5), text=7, seed=2, pad=True):
    gen = torch.Generator().manual_seed(seed)
    seq = math.prod(noisy) + math.prod(cond)
    mask = torch.ones(batch, text, dtype=torch.long)
    if pad:
        mask[-1, -2:] = 0  # padded prompt tokens exercise the joint mask
    return dict(
        hidden_states=torch.randn(batch, seq, 16, generator=gen),
        encoder_hidden_states=torch.randn(batch, text, TEXT_DIM, generator=gen),
        encoder_hidden_states_mask=mask,
        timestep=torch.full((batch,), 0.7),
        img_shapes=[[noisy, cond]] * batch,
        return_dict=False,
    )


def pick(inputs, i):
    out = {k: (v[i:i + 1] if torch.is_tensor(v) else v) for k, v in inputs.items()}
    out["img_shapes"] = inputs["img_shapes"][i:i + 1]
    return out


@torch.no_grad()
def run(model, inputs):
    return model(**inputs)[0]


def processors(model):
    return [block.attn.processor for block in model.transformer_blocks]


# -- an independent float64 implementation of one guided attention call ------------------
def reference_attention(attn, kw, start, scales):
    x, ctx = kw["hidden_states"].double(), kw["encoder_hidden_states"].double()
    img_freqs, txt_freqs = kw["image_rotary_emb"]

    def lin(layer, t):
        return t @ layer.weight.double().T + layer.bias.double()

    def heads(t):
        return t.reshape(*t.shape[:2], HEADS, HEAD_DIM)

    def rms(norm, t):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight.double()

    def rope(t, freqs):  # rotate channel pairs (2i, 2i+1) by the complex frequency
        z = torch.complex(t[..., 0::2], t[..., 1::2]) * freqs.to(torch.complex128)[None, :, None, :]
        return torch.stack([z.real, z.imag], dim=-1).flatten(-2)

    def guide(t, d, b):
        out = t.clone()
        c = t[:, start:]
        mean = c.mean(dim=1, keepdim=True)
        view = (-1, 1, 1, 1)
        out[:, start:] = b.double().view(view) * mean + d.double().view(view) * (c - mean)
        return out

    q = guide(rope(rms(attn.norm_q, heads(lin(attn.to_q, x))), img_freqs), scales["dq"], scales["bq"])
    k = guide(rope(rms(attn.norm_k, heads(lin(attn.to_k, x))), img_freqs), scales["dk"], scales["bk"])
    v = guide(heads(lin(attn.to_v, x)), scales["dv"], scales["bv"])
    tq = rope(rms(attn.norm_added_q, heads(lin(attn.add_q_proj, ctx))), txt_freqs)
    tk = rope(rms(attn.norm_added_k, heads(lin(attn.add_k_proj, ctx))), txt_freqs)
    tv = heads(lin(attn.add_v_proj, ctx))
    Q, K, V = (torch.cat(p, dim=1) for p in ((tq, q), (tk, k), (tv, v)))
    scores = torch.einsum("bqhd,bkhd->bhqk", Q, K) / math.sqrt(HEAD_DIM)
    keep = torch.cat([kw["encoder_hidden_states_mask"].bool(), torch.ones(x.shape[:2], dtype=torch.bool)], dim=1)
    scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
    out = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), V).flatten(2)
    text = ctx.shape[1]
    return lin(attn.to_out[0], out[:, text:]), lin(attn.to_add_out, out[:, :text])


def capture_block(model, index, inputs):
    """Inputs and outputs of block ``index``'s attention during one transformer call."""
    seen = {}
    attn = model.transformer_blocks[index].attn
    h1 = attn.register_forward_pre_hook(lambda m, a, kw: seen.update(kw=kw), with_kwargs=True)
    h2 = attn.register_forward_hook(lambda m, a, out: seen.update(out=out))
    try:
        run(model, inputs)
    finally:
        h1.remove()
        h2.remove()
    return attn, seen["kw"], seen["out"]


SCALES = {"dk": [1.2, 0.8], "dv": [1.15, 1.3], "bk": [1.0, 1.1], "bv": [0.9, 1.0], "dq": [1.1, 1.0], "bq": [1.0, 1.05]}


@pytest.mark.parametrize("shapes", [((1, 4, 4), (1, 3, 5)), ((1, 2, 6), (1, 4, 4)), ((1, 4, 6), (1, 6, 4))])
@pytest.mark.parametrize("guided", [False, True])
def test_block_matches_reference_formula(transformer, shapes, guided):
    noisy, cond = shapes
    inputs = make_inputs(2, noisy, cond)
    scales = SCALES if guided else {k: [1.0, 1.0] for k in SCALES}
    if guided:
        with bias_delta_guidance(transformer, **scales):
            attn, kw, (img, txt) = capture_block(transformer, 1, inputs)
    else:  # the stock processor against the same reference: validates the reference itself
        attn, kw, (img, txt) = capture_block(transformer, 1, inputs)
    ref_img, ref_txt = reference_attention(attn, kw, math.prod(noisy), {k: torch.tensor(v) for k, v in scales.items()})
    torch.testing.assert_close(img.double(), ref_img, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(txt.double(), ref_txt, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_identity_is_bitwise_stock(transformer, dtype):
    if dtype != torch.float32:
        transformer = copy.deepcopy(transformer).to(dtype)
    inputs = {k: (v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v)
              for k, v in make_inputs(2).items()}
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
    inputs = make_inputs(2, pad=False)
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
    inputs = make_inputs(1, noisy, cond, text)
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


def official_block(key_or_value, txt_len, img_len, bias, delta, text=None):
    """The official scripts' lines on one sample, typed from leeguandong/DCAG dcag/models.py
    lines 336-350 (2b0782e): ``x`` is (txt, img) of [1, S, heads, head_dim] in bfloat16."""
    txt_key, img_key = key_or_value
    if text is not None:  # keys: the text-stream rescale with grag_scale's txt (512, 1.0, 1.0)
        txt_key_mean = txt_key[:, :txt_len, :, :].mean(dim=1)
        txt_key[:, :txt_len, :, :] = 1.0 * txt_key_mean + (txt_key[:, :txt_len, :, :] - txt_key_mean) * 1.0
    cond_key_mean = img_key[:, -1 * img_len:, :, :].mean(dim=1)
    img_key[:, -1 * img_len:, :, :] = bias * cond_key_mean + (img_key[:, -1 * img_len:, :, :] - cond_key_mean) * delta
    return torch.cat([txt_key, img_key], dim=1)


def test_official_arithmetic_is_the_official_scripts_expression(transformer, monkeypatch):
    """arithmetic='official' against the official lines applied to the stock run's Q/K/V of
    block 0 (identical inputs there), bit for bit in bfloat16; fused at (1, 1) is the stock
    output, official is not (its identity rescale rounds), and the two arithmetics differ
    by bfloat16 rounding only."""
    model = copy.deepcopy(transformer).to(torch.bfloat16)
    noisy, cond, text = (1, 4, 4), (1, 3, 5), 7
    inputs = {k: (v.to(torch.bfloat16) if torch.is_tensor(v) and v.is_floating_point() else v)
              for k, v in make_inputs(1, noisy, cond, text, pad=False).items()}
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


def test_restores_processors_and_hooks_after_exception(transformer):
    before = processors(transformer)
    inputs = make_inputs(1)
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
            run(transformer, make_inputs(1))
    with bias_delta_guidance(transformer, dk=1.1):
        with pytest.raises(ConfigError, match="image tokens"):
            run(transformer, {**make_inputs(1), "img_shapes": [[(1, 4, 4), (1, 3, 4)]]})
        with pytest.raises(ConfigError, match="already installed"):
            with bias_delta_guidance(transformer, dk=1.2):
                pass
    assert all(a is b for a, b in zip(processors(transformer), before))
    assert all(type(p) is QwenDoubleStreamAttnProcessor2_0 for p in before)
    assert not transformer._forward_pre_hooks and not transformer._forward_hooks


def test_block_selection(transformer):
    inputs = make_inputs(1)
    stock = run(transformer, inputs)
    with bias_delta_guidance(transformer, dk=1.3, blocks=[-1]):
        kinds = [type(p) for p in processors(transformer)]
        out = run(transformer, inputs)
    assert kinds == [QwenDoubleStreamAttnProcessor2_0, BiasDeltaAttnProcessor]
    assert not torch.allclose(out, stock)


def test_branch_selection_follows_cache_context(transformer):
    inputs = make_inputs(1)
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
    base = make_inputs(1)
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


def test_method_grid_and_control(transformer):
    method = BiasDelta(name="dcag", grid={"dk": [1.10, 1.15], "dv": [1.0, 1.15]})
    edits = method.edits()
    assert [(e["dk"], e["dv"]) for e in edits] == [(1.10, 1.0), (1.10, 1.15), (1.15, 1.0), (1.15, 1.15)]
    assert all(set(e) == {"dk", "dv", "bk", "bv", "dq", "bq", "guidance_arithmetic"} for e in edits)
    assert all(e["bk"] == e["bq"] == 1.0 and e["guidance_arithmetic"] == "fused" for e in edits)
    backend = SimpleNamespace(transformer=transformer, num_inference_steps=3)
    inputs = make_inputs(2, pad=False)
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


# -- the fused in-place rescale against the implementation it replaced ----------------------
# the implementation the fused rescale replaced (commit 150ab91), kept verbatim in the benchmark
# that measures both: a float32 copy of the condition tokens, four element-wise passes, a cat
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_bias_delta import LegacyCall, legacy_bias_delta  # noqa: E402


def run_legacy(model, inputs, guidance):
    """One transformer call under ``guidance`` with the legacy arithmetic in its processors:
    a pre-hook registered after the guidance's own swaps in a LegacyCall."""
    def swap(module, args, kwargs):
        if guidance.call is not None:
            guidance.call = LegacyCall(guidance.call.length, guidance.scales, kwargs["hidden_states"].device)

    handle = model.register_forward_pre_hook(swap, with_kwargs=True)
    try:
        return run(model, inputs)
    finally:
        handle.remove()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_rescale_matches_the_legacy_implementation(dtype):
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


def test_guided_transformer_matches_the_legacy_implementation(transformer):
    inputs = make_inputs(2)
    with bias_delta_guidance(transformer, **SCALES) as guidance:
        fused = run(transformer, inputs)
        legacy = run_legacy(transformer, inputs, guidance)
    # float32 rounding of two equal formulas, carried through two blocks: within 1e-6 of the output's scale
    # (measured 3.8e-6 to 7.6e-6 on outputs up to 28); the guidance itself moves the output by > 1e-2
    assert (fused - legacy).abs().max() <= 1e-6 * fused.abs().max()
    assert (fused - run(transformer, inputs)).abs().max() > 1e-2


def test_per_call_state_is_built_once_and_rescales_in_place(transformer, monkeypatch):
    calls = record_attention(monkeypatch, transformer_qwenimage)
    seen = []
    with bias_delta_guidance(transformer, dk=[1.2, 1.0], dv=1.15) as guidance:
        def spy(module, args, output):
            seen.append(guidance.call)

        handle = transformer.register_forward_hook(spy, prepend=True)  # runs before the guidance clears it
        try:
            run(transformer, make_inputs(2))
            run(transformer, make_inputs(2, seed=3))
        finally:
            handle.remove()
    assert len(seen) == 2
    # the device copies of the scales are made once, not per call or per block
    assert all(a is b for (_, a, _), (_, b, _) in zip(seen[0].factors, seen[1].factors))
    assert [i for i, _, _ in seen[0].factors] == [1, 2]  # key, value; the identity query is skipped
    assert len(calls) == 4  # two blocks per call reached the attention

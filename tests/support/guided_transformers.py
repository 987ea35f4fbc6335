"""The tiny MM-DiT transformers bias-delta guidance is tested on, Qwen-Image-Edit's
QwenImageTransformer2DModel (qwen_tiny) and FLUX.1 Kontext's FluxTransformer2DModel
(flux_tiny), with non-trivial weights; the inputs of one call; and an independent float64
implementation of one guided attention call, written from the module weights; the
official scripts' rescale of one block's keys or values (``official_block``).

A test module names its architecture in ``ARCH`` ("qwen" or "flux"); the ``transformer``
fixture of tests/methods/bias_delta/conftest.py builds that one.
"""

from __future__ import annotations

import math

import torch

import flux_tiny
import qwen_tiny

ARCHITECTURES = ("qwen", "flux")
SCALES = {"dk": [1.2, 0.8], "dv": [1.15, 1.3], "bk": [1.0, 1.1], "bv": [0.9, 1.0], "dq": [1.1, 1.0], "bq": [1.0, 1.05]}
#: (noisy latent, condition image, prompt tokens) of a call: ([frames,] height, width) in patches
SHAPES = {"qwen": ((1, 4, 4), (1, 3, 5), 7), "flux": ((4, 4), (3, 5), 6)}


def random_transformer(arch: str):
    """The tiny transformer of ``arch`` with non-trivial weights everywhere (gates and norms included)."""
    torch.manual_seed(0)
    model = {"qwen": qwen_tiny.tiny_transformer, "flux": flux_tiny.tiny_transformer}[arch]()
    head_dim = model.config.attention_head_dim
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            norm = p.ndim == 1 and p.shape[0] == head_dim  # QK-norm weights: around 1
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3 + (1.0 if norm else 0.0))
    return model


def grid_ids(first: float, h: int, w: int) -> torch.Tensor:
    """Flux's img_ids of an h x w token grid, marked ``first`` in column 0."""
    ids = torch.zeros(h, w, 3)
    ids[..., 0] = first
    ids[..., 1] = torch.arange(h)[:, None]
    ids[..., 2] = torch.arange(w)[None, :]
    return ids.reshape(-1, 3)


def make_inputs(arch: str, batch, noisy=None, cond=None, text=None, seed=2, pad=True) -> dict:
    """One transformer call: noisy-latent tokens, then condition tokens (defaults: SHAPES).
    Qwen: ``img_shapes`` says where they are; ``pad`` pads the last sample's last two prompt
    tokens (they exercise the joint mask). Flux (Kontext): img_ids[:, 0] = 1 marks them."""
    noisy, cond, text = (given or default for given, default in zip((noisy, cond, text), SHAPES[arch]))
    gen = torch.Generator().manual_seed(seed)
    seq = math.prod(noisy) + math.prod(cond)
    if arch == "qwen":
        mask = torch.ones(batch, text, dtype=torch.long)
        if pad:
            mask[-1, -2:] = 0
        return dict(
            hidden_states=torch.randn(batch, seq, 16, generator=gen),
            encoder_hidden_states=torch.randn(batch, text, qwen_tiny.TEXT_DIM, generator=gen),
            encoder_hidden_states_mask=mask,
            timestep=torch.full((batch,), 0.7),
            img_shapes=[[noisy, cond]] * batch,
            return_dict=False,
        )
    return dict(
        hidden_states=torch.randn(batch, seq, 16, generator=gen),
        encoder_hidden_states=torch.randn(batch, text, flux_tiny.TEXT_DIM, generator=gen),
        pooled_projections=torch.randn(batch, flux_tiny.POOLED_DIM, generator=gen),
        timestep=torch.full((batch,), 0.7),
        guidance=torch.full((batch,), 2.5),
        img_ids=torch.cat([grid_ids(0, *noisy), grid_ids(1, *cond)]),
        txt_ids=torch.zeros(text, 3),
        return_dict=False,
    )


def pick(inputs: dict, i: int) -> dict:
    """Sample ``i`` of a call's inputs (Flux's ids, shared by the batch, stay whole)."""
    out = {k: (v[i : i + 1] if torch.is_tensor(v) and k not in ("img_ids", "txt_ids") else v)
           for k, v in inputs.items()}
    if "img_shapes" in inputs:
        out["img_shapes"] = inputs["img_shapes"][i : i + 1]
    return out


@torch.no_grad()
def run(model, inputs):
    return model(**inputs)[0]


def attentions(model) -> list:
    """The attention modules, double-stream blocks first (Flux's single-stream ones last)."""
    blocks = [*model.transformer_blocks, *getattr(model, "single_transformer_blocks", [])]
    return [b.attn for b in blocks]


def processors(model) -> list:
    return [attn.processor for attn in attentions(model)]


def capture(model, index, inputs):
    """Inputs and outputs (a tuple) of attention ``index`` (:func:`attentions`) during one call."""
    seen = {}
    attn = attentions(model)[index]
    h1 = attn.register_forward_pre_hook(lambda m, a, kw: seen.update(kw=kw), with_kwargs=True)
    h2 = attn.register_forward_hook(lambda m, a, out: seen.update(out=out))
    try:
        run(model, inputs)
    finally:
        h1.remove()
        h2.remove()
    out = seen["out"] if isinstance(seen["out"], tuple) else (seen["out"],)
    return attn, seen["kw"], out


# -- an independent float64 implementation of one guided attention call ------------------
def _lin(layer, t):
    return t @ layer.weight.double().T + layer.bias.double()


def _heads(attn, t):
    return t.reshape(*t.shape[:2], attn.heads, -1)


def _rms(norm, t):
    return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight.double()


def _guide(t, length, d, b):
    """The last ``length`` tokens become b * mean + d * (x - mean), per sample."""
    out, start = t.clone(), t.shape[1] - length
    c = t[:, start:]
    mean = c.mean(dim=1, keepdim=True)
    view = (-1, 1, 1, 1)
    out[:, start:] = b.double().view(view) * mean + d.double().view(view) * (c - mean)
    return out


def _attend(q, k, v, keep=None):
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    if keep is not None:
        scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).flatten(2)


def _qwen_reference(attn, kw, length, scales):
    x, ctx = kw["hidden_states"].double(), kw["encoder_hidden_states"].double()
    img_freqs, txt_freqs = kw["image_rotary_emb"]

    def rope(t, freqs):  # rotate channel pairs (2i, 2i+1) by the complex frequency
        z = torch.complex(t[..., 0::2], t[..., 1::2]) * freqs.to(torch.complex128)[None, :, None, :]
        return torch.stack([z.real, z.imag], dim=-1).flatten(-2)

    def project(layer, norm, t, freqs):
        return rope(_rms(norm, _heads(attn, _lin(layer, t))), freqs)

    q = _guide(project(attn.to_q, attn.norm_q, x, img_freqs), length, scales["dq"], scales["bq"])
    k = _guide(project(attn.to_k, attn.norm_k, x, img_freqs), length, scales["dk"], scales["bk"])
    v = _guide(_heads(attn, _lin(attn.to_v, x)), length, scales["dv"], scales["bv"])
    tq = project(attn.add_q_proj, attn.norm_added_q, ctx, txt_freqs)
    tk = project(attn.add_k_proj, attn.norm_added_k, ctx, txt_freqs)
    tv = _heads(attn, _lin(attn.add_v_proj, ctx))
    Q, K, V = (torch.cat(p, dim=1) for p in ((tq, q), (tk, k), (tv, v)))
    keep = torch.cat([kw["encoder_hidden_states_mask"].bool(), torch.ones(x.shape[:2], dtype=torch.bool)], dim=1)
    out = _attend(Q, K, V, keep)
    text = ctx.shape[1]
    return _lin(attn.to_out[0], out[:, text:]), _lin(attn.to_add_out, out[:, :text])


def _flux_reference(attn, kw, length, scales):
    x = kw["hidden_states"].double()
    ctx = kw.get("encoder_hidden_states")
    cos, sin = (f.double() for f in kw["image_rotary_emb"])

    def rope(t):  # rotate channel pairs (2i, 2i+1) by the position's angle
        pairs = t.unflatten(-1, (-1, 2))
        rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
        return t * cos[None, :, None, :] + rotated * sin[None, :, None, :]

    q, k = _rms(attn.norm_q, _heads(attn, _lin(attn.to_q, x))), _rms(attn.norm_k, _heads(attn, _lin(attn.to_k, x)))
    v = _heads(attn, _lin(attn.to_v, x))
    if ctx is not None:  # double-stream: text tokens first
        ctx = ctx.double()
        q = torch.cat([_rms(attn.norm_added_q, _heads(attn, _lin(attn.add_q_proj, ctx))), q], dim=1)
        k = torch.cat([_rms(attn.norm_added_k, _heads(attn, _lin(attn.add_k_proj, ctx))), k], dim=1)
        v = torch.cat([_heads(attn, _lin(attn.add_v_proj, ctx)), v], dim=1)
    q = _guide(rope(q), length, scales["dq"], scales["bq"])
    k = _guide(rope(k), length, scales["dk"], scales["bk"])
    v = _guide(v, length, scales["dv"], scales["bv"])
    out = _attend(q, k, v)
    if ctx is None:
        return (out,)
    text = ctx.shape[1]
    return _lin(attn.to_out[0], out[:, text:]), _lin(attn.to_add_out, out[:, :text])


def reference_attention(arch: str, attn, kw, length: int, scales: dict) -> tuple:
    """The outputs of attention module ``attn`` called with ``kw`` when the last ``length``
    tokens of its image stream get the bias-delta ``scales`` (tensors, one value per sample)."""
    return {"qwen": _qwen_reference, "flux": _flux_reference}[arch](attn, kw, length, scales)


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

"""FLUX.1 Kontext: bias-delta guidance on a tiny FluxTransformer2DModel (double- and
single-stream blocks) and the FluxKontextBackend on a tiny pipeline loaded from disk.

Expected values come from the stock diffusers processor or from a float64
re-implementation of the attention written here from the module weights.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import FluxKontextPipeline
from diffusers.models.transformers import transformer_flux
from diffusers.models.transformers.transformer_flux import FluxAttnProcessor

from PIL import Image

from attnedit.backends.base import check_description
from attnedit.backends.flux_kontext import FluxKontextBackend
from attnedit.data.base import Sample
from attnedit.errors import ConfigError, WeightsNotFoundError
from attention_recorder import record_attention
from attnedit.methods.bias_delta.flux import FluxBiasDeltaAttnProcessor
from attnedit.methods.bias_delta.guidance import bias_delta_guidance
from attnedit.methods.bias_delta.method import BiasDelta
from flux_tiny import POOLED_DIM, TEXT_DIM, save_tiny_pipeline, tiny_transformer
from pipeline_recorder import Stop, assert_same_calls, recording

HEADS, HEAD_DIM = 2, 8
SCALES = {"dk": [1.2, 0.8], "dv": [1.15, 1.3], "bk": [1.0, 1.1], "bv": [0.9, 1.0], "dq": [1.1, 1.0], "bq": [1.0, 1.05]}


@pytest.fixture(scope="module")
def transformer():
    torch.manual_seed(0)
    model = tiny_transformer()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial weights everywhere (gates and norms included)
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3 + (1.0 if p.ndim == 1 and p.shape[0] == HEAD_DIM else 0.0))
    return model


def grid_ids(first: float, h: int, w: int) -> torch.Tensor:
    ids = torch.zeros(h, w, 3)
    ids[..., 0] = first
    ids[..., 1] = torch.arange(h)[:, None]
    ids[..., 2] = torch.arange(w)[None, :]
    return ids.reshape(-1, 3)


def make_inputs(batch, noisy=(4, 4), cond=(3, 5), text=6, seed=2):
    """A Kontext call: noisy-latent tokens, then condition tokens marked by img_ids[:, 0] = 1."""
    gen = torch.Generator().manual_seed(seed)
    seq = math.prod(noisy) + math.prod(cond)
    return dict(
        hidden_states=torch.randn(batch, seq, 16, generator=gen),
        encoder_hidden_states=torch.randn(batch, text, TEXT_DIM, generator=gen),
        pooled_projections=torch.randn(batch, POOLED_DIM, generator=gen),
        timestep=torch.full((batch,), 0.7),
        guidance=torch.full((batch,), 2.5),
        img_ids=torch.cat([grid_ids(0, *noisy), grid_ids(1, *cond)]),
        txt_ids=torch.zeros(text, 3),
        return_dict=False,
    )


def pick(inputs, i):
    return {k: (v[i : i + 1] if torch.is_tensor(v) and k not in ("img_ids", "txt_ids") else v)
            for k, v in inputs.items()}


@torch.no_grad()
def run(model, inputs):
    return model(**inputs)[0]


def attentions(model):
    return [b.attn for b in model.transformer_blocks] + [b.attn for b in model.single_transformer_blocks]


# -- an independent float64 implementation of one guided Flux attention call -------------
def reference_attention(attn, kw, length, scales):
    x = kw["hidden_states"].double()
    ctx = kw.get("encoder_hidden_states")
    cos, sin = (f.double() for f in kw["image_rotary_emb"])

    def lin(layer, t):
        return t @ layer.weight.double().T + layer.bias.double()

    def heads(t):
        return t.reshape(*t.shape[:2], HEADS, HEAD_DIM)

    def rms(norm, t):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight.double()

    def rope(t):  # rotate channel pairs (2i, 2i+1) by the position's angle
        pairs = t.unflatten(-1, (-1, 2))
        rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
        return t * cos[None, :, None, :] + rotated * sin[None, :, None, :]

    def guide(t, d, b):
        out, start = t.clone(), t.shape[1] - length
        c = t[:, start:]
        mean = c.mean(dim=1, keepdim=True)
        view = (-1, 1, 1, 1)
        out[:, start:] = b.double().view(view) * mean + d.double().view(view) * (c - mean)
        return out

    q, k, v = rms(attn.norm_q, heads(lin(attn.to_q, x))), rms(attn.norm_k, heads(lin(attn.to_k, x))), heads(lin(attn.to_v, x))
    if ctx is not None:  # double-stream: text tokens first
        ctx = ctx.double()
        q = torch.cat([rms(attn.norm_added_q, heads(lin(attn.add_q_proj, ctx))), q], dim=1)
        k = torch.cat([rms(attn.norm_added_k, heads(lin(attn.add_k_proj, ctx))), k], dim=1)
        v = torch.cat([heads(lin(attn.add_v_proj, ctx)), v], dim=1)
    q = guide(rope(q), scales["dq"], scales["bq"])
    k = guide(rope(k), scales["dk"], scales["bk"])
    v = guide(v, scales["dv"], scales["bv"])
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(HEAD_DIM)
    out = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).flatten(2)
    if ctx is None:
        return (out,)
    text = ctx.shape[1]
    return lin(attn.to_out[0], out[:, text:]), lin(attn.to_add_out, out[:, :text])


def capture(model, index, inputs):
    """Inputs and outputs of attention ``index`` (double-stream first) during one call."""
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


@pytest.mark.parametrize("index", [0, 1, 2])  # the double-stream block, then both single-stream ones
@pytest.mark.parametrize("guided", [False, True])
def test_attention_matches_reference_formula(transformer, index, guided):
    noisy, cond = (4, 4), (3, 5)  # a non-square condition image
    inputs = make_inputs(2, noisy, cond)
    scales = SCALES if guided else {k: [1.0, 1.0] for k in SCALES}
    if guided:
        with bias_delta_guidance(transformer, **scales):
            attn, kw, outs = capture(transformer, index, inputs)
    else:  # the stock processor against the same reference: validates the reference itself
        attn, kw, outs = capture(transformer, index, inputs)
    expected = reference_attention(attn, kw, math.prod(cond), {k: torch.tensor(v) for k, v in scales.items()})
    assert len(outs) == len(expected) == (2 if index == 0 else 1)
    for got, want in zip(outs, expected):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_identity_is_bitwise_stock_and_processors_come_back(transformer):
    inputs = make_inputs(2)
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
    inputs = make_inputs(2)
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
    inputs = make_inputs(1, noisy, cond, text)
    run(transformer, inputs)
    stock = list(calls)
    calls.clear()
    with bias_delta_guidance(transformer, dk=1.2, dv=1.15, dq=1.1, blocks=[-1]):  # the last single-stream block
        run(transformer, inputs)
    first_cond = text + math.prod(noisy)
    for i, (s, g) in enumerate(zip(stock, calls)):
        for name, a, b in zip("QKV", s, g):
            if i < 2:  # blocks before the guided one see identical inputs
                assert torch.equal(a, b), f"attention {i} {name} changed"
            else:
                assert torch.equal(a[:, :first_cond], b[:, :first_cond]), f"{name}: text or noisy tokens changed"
                assert not torch.allclose(a[:, first_cond:], b[:, first_cond:]), f"{name}: condition tokens unchanged"


def test_condition_tokens_come_from_img_ids(transformer):
    inputs = make_inputs(1)
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


# -- the backend on a tiny pipeline loaded from disk ----------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("flux_kontext") / "pipe")


# The tiny VAE has no downsampling to spare: the pipeline's 1 MP default working size would put
# a 512 x 512 attention in its mid block. Backend and documented call both work at 32 x 32.
SMALL = dict(max_area=32 * 32, auto_resize=False, max_sequence_length=16)


@pytest.fixture(scope="module")
def backend(model_dir):
    return FluxKontextBackend(str(model_dir), device="cpu", num_inference_steps=2, **SMALL)


def samples(n=2):
    gen = torch.Generator().manual_seed(3)
    image = (torch.rand(3, 24, 40, generator=gen) * 255).round() / 255  # non-square, 8-bit values
    return [Sample(id=f"s{i}", image=image, fields={"editing_instruction": f"make it red {i}"}) for i in range(n)]


def test_backend_edits_through_the_pipeline(backend):
    batch = samples(2)
    edited = backend.generate(batch)
    assert edited.shape == (2, 3, 24, 40) and edited.dtype == torch.float32
    assert 0 <= float(edited.min()) and float(edited.max()) <= 1
    # each sample its own seeded generator: a batch equals single runs (up to batched-GEMM rounding)
    torch.testing.assert_close(backend.generate(batch[:1])[0], edited[0], rtol=0, atol=1e-5)
    assert not torch.allclose(edited[0], edited[1])  # different instructions
    info = backend.describe()
    assert info["settings"]["pipeline"] == "FluxKontextPipeline" and info["settings"]["guidance_scale"] == 2.5
    assert info["settings"]["cache_conditions"] is True and info["settings"]["output_aspect"] == "source"
    assert info["weights_hash_kind"] == "full" and len(info["weights_sha256_16"]) == 16
    check_description(info)


def test_backend_with_grag_and_dcag(backend):
    batch = samples(1) * 2  # one image, two grid points in one pipeline call
    plain = backend.generate(batch)
    method = BiasDelta("dcag", grid={"dk": [1.0, 1.3], "dv": [1.0, 1.2]}, blocks=None)
    edits = [e for e in method.edits() if (e["dk"], e["dv"]) in ((1.0, 1.0), (1.3, 1.2))]
    with method.control(backend, edits) as guidance:
        guided = backend.generate(batch)
    assert all(entry["guided"] for entry in guidance.log) and len(guidance.log) == 2  # 2 steps, one call each
    assert guidance.log[0]["condition_tokens"] == 60  # the 24x40 source: 12x20 latents, 2x2 patches
    assert torch.equal(guided[0], plain[0])  # (1, 1) is the stock pipeline, bit for bit
    assert torch.equal(plain[0], plain[1])
    assert (guided[1] - plain[0]).abs().max() > 1e-3
    assert all(type(a.processor) is FluxAttnProcessor for a in attentions(backend.transformer))


def test_backend_errors(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="FLUX.1 Kontext weights .*black-forest-labs/FLUX.1-Kontext-dev"):
        FluxKontextBackend(str(tmp_path / "absent"), device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsNotFoundError, match="no model_index.json"):
        FluxKontextBackend(str(tmp_path / "empty"), device="cpu")
    with pytest.raises(ConfigError, match="true_cfg_scale > 1 needs model.negative_prompt"):
        FluxKontextBackend(str(tmp_path / "empty"), device="cpu", true_cfg_scale=2.0)
    with pytest.raises(ConfigError, match="output_aspect='wide' is not one of"):
        FluxKontextBackend(str(tmp_path / "empty"), device="cpu", output_aspect="wide")


def test_piebench_dcag_recipe_runs_on_kontext(tmp_path):
    """The DCAG recipe with model=flux_kontext: config composes, the runner edits PIE-Bench
    entries with the guided tiny Kontext pipeline and stores one row per grid point."""
    import pandas as pd

    from attnedit.config import compose
    from attnedit.run.runner import Runner
    from piebench_fixture import write_piebench_fixture

    cfg = compose("config", ["experiment=piebench_dcag", "model=flux_kontext"])
    assert cfg.model._target_ == "attnedit.backends.flux_kontext.FluxKontextBackend"
    assert (cfg.model.path, cfg.model.num_inference_steps, cfg.model.guidance_scale) == (
        "black-forest-labs/FLUX.1-Kontext-dev", 28, 2.5)
    assert cfg.tables.reference is None  # the published numbers are Qwen-Image-Edit's: never beside Kontext rows
    assert compose("config", ["experiment=piebench_dcag_grid"]).tables.reference.endswith("dcag_piebench.csv")
    model_dir = save_tiny_pipeline(tmp_path / "tiny_kontext")
    write_piebench_fixture(tmp_path / "PIE-Bench", size=64)
    cfg = compose("config", [
        "experiment=piebench_dcag", "model=flux_kontext", f"paths.root_dir={tmp_path}", f"model.path={model_dir}",
        "model.num_inference_steps=1", "model.max_area=1024", "model.auto_resize=false",
        "model.max_sequence_length=16", f"dataset.root={tmp_path / 'PIE-Bench'}", "dataset.ids=['111000000000']",
        "metrics=fidelity", "device=cpu", "progress=false", "dcag_row=dcag", "batch_size=2",
    ])
    frame = pd.read_parquet(Runner(cfg).run() / "cases")
    assert len(frame) == 2 and set(frame.sample_id) == {"111000000000"}
    assert sorted(zip(frame.dk, frame.dv)) == [(1.10, 1.15), (1.15, 1.15)]
    assert frame.psnr.map(math.isfinite).all() and frame.psnr.nunique() == 2  # each grid point its own edit



# -- the documented call, and the work shared by the cases of one image ----------------------
def source(seed: int, size=(32, 32), instruction="make it red") -> Sample:
    pixels = torch.randint(0, 256, (3, *size), generator=torch.Generator().manual_seed(seed)) / 255.0
    return Sample(id=f"k{seed}", image=pixels, fields={"editing_instruction": instruction})


def pil(s: Sample) -> Image.Image:
    return Image.fromarray((s.image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy().astype(np.uint8))


def parts(pipe) -> dict:
    return {"clip": pipe.text_encoder, "t5": pipe.text_encoder_2, "vae": pipe.vae.encoder, "transformer": pipe.transformer}


TRANSFORMER_INPUTS = ("hidden_states", "encoder_hidden_states", "pooled_projections", "img_ids", "txt_ids",
                      "guidance", "timestep")


def documented_call(pipe, s: Sample) -> dict:
    """The model card's call (diffusers pipeline_flux_kontext.py L56-79) at the tests' working
    size, up to the first transformer call."""
    with recording(parts(pipe), stop_at="transformer") as seen, pytest.raises(Stop):
        pipe(image=pil(s), prompt=s.fields["editing_instruction"], guidance_scale=2.5,
             generator=torch.Generator().manual_seed(42), max_area=SMALL["max_area"],
             _auto_resize=SMALL["auto_resize"], max_sequence_length=SMALL["max_sequence_length"])
    return seen


def backend_call(backend, samples) -> dict:
    with recording(parts(backend.pipe), stop_at="transformer") as seen, pytest.raises(Stop):
        backend.generate(samples)
    return seen


def test_backend_makes_the_documented_call(backend, model_dir, monkeypatch):
    stock = FluxKontextPipeline.from_pretrained(model_dir, dtype=torch.float32)
    monkeypatch.setattr(backend, "cache_conditions", False)
    square, wide = source(1), source(2, size=(24, 40))
    want = documented_call(stock, square)
    got = backend_call(backend, [square, square])  # two grid points of one image
    for encoder in ("clip", "t5", "vae"):
        assert_same_calls(got[encoder], want[encoder], ("args",))
    first, ref = got["transformer"][0], want["transformer"][0]
    for key in TRANSFORMER_INPUTS:
        value, expected = first[key], ref[key]
        assert torch.equal(value, expected if value.shape == expected.shape else torch.cat([expected] * 2)), key

    # non-square: the same conditioning; the output keeps the source's aspect ratio unless
    # output_aspect="square", which is the model card's call exactly
    want = documented_call(stock, wide)
    got = backend_call(backend, [wide])
    for encoder in ("clip", "t5", "vae"):
        assert_same_calls(got[encoder], want[encoder], ("args",))
    length = int((want["transformer"][0]["img_ids"][:, 0] == 1).sum())
    assert torch.equal(got["transformer"][0]["hidden_states"][:, -length:], want["transformer"][0]["hidden_states"][:, -length:])
    assert got["transformer"][0]["hidden_states"].shape[1] - length == 6 * 10  # 24 x 40 at ~32 x 32: 12 x 20 latents
    assert want["transformer"][0]["hidden_states"].shape[1] - length == 8 * 8  # the pipeline's square default
    monkeypatch.setattr(backend, "output_aspect", "square")
    assert_same_calls(backend_call(backend, [wide])["transformer"][:1], want["transformer"], TRANSFORMER_INPUTS)


def test_grid_of_one_image_encodes_it_once(backend, monkeypatch):
    """A 5-point (dk, dv) grid over one image in the runner's batches of 2: CLIP, T5 and the
    VAE encoder run once for the image with cache_conditions, in every pipeline call without;
    the edited images are the same."""
    monkeypatch.setattr(backend, "num_inference_steps", 1)
    image = source(3, size=(24, 40), instruction="paint the sky green")
    points = [(1.0, 1.0), (1.1, 1.0), (1.1, 1.15), (1.15, 1.15), (1.2, 1.05)]
    batches = [points[0:2], points[2:4], points[4:]]

    def run_grid():
        watched = {k: v for k, v in parts(backend.pipe).items() if k != "transformer"}
        with recording(watched) as seen:
            edited = []
            for batch in batches:
                with bias_delta_guidance(backend.transformer, dk=[p[0] for p in batch], dv=[p[1] for p in batch]):
                    edited.append(backend.generate([image] * len(batch)))
        return seen, torch.cat(edited)

    cached, cached_images = run_grid()
    assert [len(cached[k]) for k in ("clip", "t5", "vae")] == [1, 1, 1]
    monkeypatch.setattr(backend, "cache_conditions", False)
    uncached, uncached_images = run_grid()
    assert [len(uncached[k]) for k in ("clip", "t5", "vae")] == [len(batches)] * 3
    torch.testing.assert_close(cached_images, uncached_images, rtol=0, atol=1e-6)
    assert (cached_images[0] - cached_images[4]).abs().max() > 1e-4  # the grid points differ (tiny random model)

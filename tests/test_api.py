"""The Python API (README "Using attnedit from Python"): each function against an
independent computation (numpy float64, the official PIE-Bench formulas of
piebench_fixture), and every README snippet of that section run as written on tiny
models saved with save_pretrained, so the README cannot rot."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel

import attnedit
from attnedit import bias_delta_guidance, inject_directions, piebench_metric, piebench_metrics, sad_directions
from attnedit.errors import ConfigError
from harness import REPO
from piebench_fixture import fixture_batch, official_scores
from piebench_fixture import one_thread  # noqa: F401 (autouse: one torch thread, far faster on a busy CPU)

LAYER = "mid_block.attentions.0"


@pytest.fixture(scope="module")
def ddim(tiny_ddpm_dir) -> DDIMPipeline:
    return DDIMPipeline(unet=UNet2DModel.from_pretrained(tiny_ddpm_dir).eval(),
                        scheduler=DDIMScheduler.from_pretrained(tiny_ddpm_dir))


def test_import_attnedit_loads_no_torch_and_exports_the_api():
    out = subprocess.run([sys.executable, "-c", "import sys, attnedit; print(sorted(m for m in ('torch', 'diffusers', "
                          "'numpy', 'pandas') if m in sys.modules))"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    from attnedit import api

    for name in attnedit._API:
        assert getattr(attnedit, name) is getattr(api, name) and getattr(attnedit, name).__doc__, name
    assert set(attnedit._API) <= set(dir(attnedit))
    with pytest.raises(AttributeError, match="no attribute 'inject'"):
        attnedit.inject  # noqa: B018


# -- SAD directions -------------------------------------------------------------------------
def test_sad_directions_are_numpy_eigh_of_the_qkv_gram(ddim):
    attn = dict(ddim.unet.named_modules())[LAYER]
    w = [getattr(attn, n).weight.detach().double().numpy() for n in ("to_q", "to_k", "to_v")]
    values, vectors = np.linalg.eigh(w[0].T @ w[0] + w[1].T @ w[1] + w[2].T @ w[2])
    values, vectors = values[::-1], vectors[:, ::-1].T  # descending, one per row

    got = sad_directions(ddim, LAYER)
    assert got.eigenvalues.dtype == np.float64 and got.eigenvectors.shape == (len(values), len(values))
    np.testing.assert_allclose(got.eigenvalues, values, rtol=1e-10, atol=1e-10 * values[0])
    distinct = np.flatnonzero(np.minimum(np.abs(np.diff(values, prepend=np.inf)),
                                         np.abs(np.diff(values, append=-np.inf))) > 1e-6 * values[0])
    assert len(distinct) > len(values) // 2
    for i in distinct:  # an eigenvector is defined up to sign: compare |cos|, then the sign rule
        assert abs(got.eigenvectors[i] @ vectors[i]) == pytest.approx(1, abs=1e-9), i
        assert got.eigenvectors[i][np.abs(got.eigenvectors[i]).argmax()] > 0, i
    np.testing.assert_array_equal(sad_directions(ddim.unet, LAYER).eigenvectors, got.eigenvectors)
    with pytest.raises(ConfigError, match=r"unknown self-attention layer\(s\) \['mid_block'\].*mid_block.attentions.0"):
        sad_directions(ddim, "mid_block")


# -- injection ------------------------------------------------------------------------------
def _z_and_output(pipe, x, t, **inject):
    """(the to_q input Z of LAYER as float64, the UNet output) of one UNet call at timestep t."""
    seen = []
    attn = dict(pipe.unet.named_modules())[LAYER]
    handle = attn.to_q.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().double().clone()))
    try:
        with torch.no_grad():
            if inject:
                with inject_directions(pipe, LAYER, **inject):
                    out = pipe.unet(x, torch.tensor(t)).sample
            else:
                out = pipe.unet(x, torch.tensor(t)).sample
    finally:
        handle.remove()
    (z,) = seen
    return z.numpy(), out


@pytest.mark.parametrize("alpha_scale", ["unit", "token_norm"])
def test_injection_adds_alpha_n_inside_the_window_and_nothing_outside(ddim, alpha_scale):
    n = sad_directions(ddim, LAYER).eigenvectors[1]
    alphas = np.array([0.3, -0.7])
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    edit = dict(direction=n, alpha=alphas.tolist(), alpha_scale=alpha_scale)
    for t in (501, 650, 799):  # T = 1000: the window is 500 < t < 800
        z, _ = _z_and_output(ddim, x, t)
        z_edit, _ = _z_and_output(ddim, x, t, **edit)
        scale = alphas if alpha_scale == "unit" else alphas * np.linalg.norm(z, axis=2).mean(axis=1)
        expected = scale[:, None, None] * n[None, None, :]  # the same offset on every token
        np.testing.assert_allclose(z_edit - z, np.broadcast_to(expected, z.shape), rtol=0, atol=2e-6 * np.abs(z).max())
    for t in (0, 300, 500, 800, 999):  # bounds excluded (window_bounds=strict)
        z, out = _z_and_output(ddim, x, t)
        z_edit, out_edit = _z_and_output(ddim, x, t, **edit)
        assert np.array_equal(z_edit, z) and torch.equal(out_edit, out), t
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in ddim.unet.modules())  # all removed


def test_one_direction_and_alpha_apply_to_every_batch_element_and_bad_shapes_say_so(ddim):
    n = sad_directions(ddim, LAYER).eigenvectors[0]
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    z, _ = _z_and_output(ddim, x, 700)
    z_edit, _ = _z_and_output(ddim, x, 700, direction=n, alpha=0.5, alpha_scale="unit")
    np.testing.assert_allclose(z_edit - z, np.broadcast_to(0.5 * n, z.shape), atol=2e-6 * np.abs(z).max())
    with pytest.raises(ConfigError, match="direction of shape \\(5,\\) for layer mid_block.attentions.0, which has 64"):
        with inject_directions(ddim, LAYER, np.ones(5), 0.1):
            pass
    with pytest.raises(ConfigError, match="2 directions and 3 alphas"):
        with inject_directions(ddim, LAYER, np.stack([n, n]), [0.1, 0.2, 0.3]):
            pass
    with pytest.raises(ConfigError, match="bare UNet needs num_train_timesteps"):
        with inject_directions(ddim.unet, LAYER, n, 0.1):
            pass


def test_injection_during_a_ddim_pipeline_call_edits_the_window_steps(ddim):
    ddim.set_progress_bar_config(disable=True)
    n = sad_directions(ddim, LAYER).eigenvectors[0]
    with inject_directions(ddim, LAYER, n, alpha=0.4) as state:
        ddim(generator=torch.manual_seed(0), num_inference_steps=20, output_type="np")
    timesteps = np.asarray(ddim.scheduler.timesteps)  # the schedule the call ran
    assert sorted(state.applied[LAYER]) == sorted(int(t) for t in timesteps if 500 < t < 800)
    assert len(state.applied[LAYER]) > 0


# -- bias-delta guidance -----------------------------------------------------------------
def test_bias_delta_guidance_equals_the_papers_formula_on_one_attention_call(monkeypatch):
    """Q/K/V of block 0's attention, stock and guided: the guided K and V are numpy's
    mean + d * (x - mean) over the last L (condition) tokens of the stock ones, everything
    else unchanged, and the attention output is numpy's softmax over the guided K, V."""
    from diffusers.models.transformers import transformer_qwenimage

    from attnedit.methods.bias_delta import qwen as bias_delta
    from guided_transformers import make_inputs
    from qwen_tiny import tiny_transformer

    torch.manual_seed(0)
    model = tiny_transformer()  # the stock initialization
    noisy, cond, text = (1, 4, 4), (1, 3, 5), 7
    inputs = make_inputs("qwen", 2, noisy, cond, text, seed=1, pad=False)

    def recording(module):
        calls, original = [], module.dispatch_attention_fn

        def dispatch(q, k, v, **kw):
            out = original(q, k, v, **kw)
            calls.append([t.detach().double().numpy() for t in (q, k, v, out)])
            return out

        monkeypatch.setattr(module, "dispatch_attention_fn", dispatch)
        return calls

    stock_calls = recording(transformer_qwenimage)
    guided_calls = recording(bias_delta)
    dk, dv = [1.1, 0.8], [1.15, 1.3]  # one scale per batch element
    with torch.no_grad():
        model(**inputs)
        with bias_delta_guidance(model, dk=dk, dv=dv):
            model(**inputs)
        model(**inputs)  # after the block: stock again
    q, k, v, _ = stock_calls[0]
    gq, gk, gv, gout = guided_calls[0]
    length = math.prod(cond)

    def rescale(x, d):
        x = x.copy()
        c = x[:, -length:]
        mean = c.mean(axis=1, keepdims=True)
        x[:, -length:] = mean + np.asarray(d)[:, None, None, None] * (c - mean)
        return x

    np.testing.assert_array_equal(gq, q)
    np.testing.assert_allclose(gk, rescale(k, dk), rtol=0, atol=1e-5 * np.abs(k).max())
    np.testing.assert_allclose(gv, rescale(v, dv), rtol=0, atol=1e-5 * np.abs(v).max())
    np.testing.assert_array_equal(gk[:, :-length], k[:, :-length])  # text and noisy tokens untouched
    scores = np.einsum("bqhd,bkhd->bhqk", q, rescale(k, dk)) / math.sqrt(q.shape[-1])
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    np.testing.assert_allclose(gout, np.einsum("bhqk,bkhd->bqhd", weights, rescale(v, dv)), atol=1e-5)
    assert len(guided_calls) == 2 and len(stock_calls) == 4  # both blocks guided, then stock again
    np.testing.assert_array_equal(stock_calls[2][3], stock_calls[0][3])


# -- PIE-Bench metrics -------------------------------------------------------------------
@pytest.fixture(scope="module")
def piebench(tmp_path_factory):
    """A PIE-Bench fixture's batch (piebench_fixture.fixture_batch), its root and edited files."""
    root, files, batch = fixture_batch(tmp_path_factory.mktemp("pie"))
    return dict(batch, root=root, files=files)


def test_piebench_metrics_equal_the_official_per_image_formulas(piebench):
    names = [f"{base}_unedit_part" for base in ("psnr", "ssim", "mse", "lpips")] + ["psnr_edit_part", "ssim_edit_part"]
    official = official_scores(piebench["root"], piebench["files"], names, lpips_seed=7)
    random_lpips = {"weights": "random", "seed": 7}
    got = piebench_metrics(piebench["edited"], piebench["reference"], piebench["mask"], metrics=names,
                           options={n: random_lpips for n in names if n.startswith("lpips")})
    for name in names:
        want = np.array([math.nan if official[i][name] == "nan" else official[i][name] for i in piebench["ids"]])
        assert np.isnan(want).any() == (name.endswith("unedit_part"))  # the full mask leaves no background
        np.testing.assert_allclose(got[name].numpy(), want, rtol=1e-6, atol=1e-5, equal_nan=True, err_msg=name)
        metric = piebench_metric(name, **(random_lpips if name.startswith("lpips") else {}))
        for start in (0, 3):  # two batches, one running mean that skips NaN
            part = slice(start, 3 if start == 0 else None)
            metric.update(piebench["edited"][part], piebench["reference"][part], mask=piebench["mask"][part])
        assert float(metric.compute()) == pytest.approx(np.nanmean(want), rel=1e-6, abs=1e-5), name
    assert got["ssim_unedit_part_convention"] == ["torchmetrics_legacy_crop"] * len(piebench["ids"])
    with pytest.raises(ConfigError, match="unknown PIE-Bench metric 'lpips'.*lpips_unedit_part"):
        piebench_metric("lpips")
    with pytest.raises(ConfigError, match=r"options for \['psnr_whole'\]"):
        piebench_metrics(piebench["edited"], piebench["reference"], metrics=["mse_whole"], options={"psnr_whole": {}})


# -- the README section, run as written -------------------------------------------------------
def readme_snippets() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Using attnedit from Python\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def _swap(code: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in code, f"README snippet no longer contains {old!r}; update this test with it"
        code = code.replace(old, new)
    return code


def test_offline_readme_snippets_run_exactly_as_printed(tmp_path, monkeypatch, capsys):
    """The SAD and metrics snippets, unchanged, on the shipped shapes DDPM: the edit window
    from the scheduler's own timesteps, the printed PSNR from numpy float64 of the saved files."""
    from PIL import Image

    sad, metrics = readme_snippets()[:2]
    monkeypatch.chdir(tmp_path)
    exec(sad, {"__name__": "readme_sad"})
    unedited = np.asarray(Image.open("unedited.png"), dtype=np.float64)
    edited = np.asarray(Image.open("edited_direction0.png"), dtype=np.float64)
    assert unedited.shape == edited.shape == (32, 32, 3) and np.abs(edited - unedited).max() > 0
    schedule = DDIMScheduler.from_pretrained(REPO / "src" / "attnedit" / "assets" / "shapes_ddpm" / "scheduler")
    schedule.set_timesteps(20)
    window = sorted(int(t) for t in schedule.timesteps if 500 < t < 800)
    assert f"edited at t = {window}" in capsys.readouterr().out

    exec(metrics, {"__name__": "readme_metrics_offline"})
    printed = capsys.readouterr().out
    psnr = 10 * np.log10(1 / np.mean((edited / 255 - unedited / 255) ** 2))
    assert f"'psnr_whole': {round(psnr, 4)}" in printed, printed


def test_load_pipeline_is_the_benchmark_model_and_refuses_what_it_cannot_load(tiny_ddpm_dir, tmp_path):
    """load_pipeline("shapes_ddpm") holds the run's UNet weights and the checkpoint's
    scheduler; a folder in the hub's DDPMPipeline layout loads as DDIM; random-weight and
    non-DDPM configs and missing folders are refused."""
    from safetensors.torch import load_file

    from attnedit.errors import WeightsNotFoundError

    pipe = attnedit.load_pipeline("shapes_ddpm", device="cpu")
    shipped = REPO / "src" / "attnedit" / "assets" / "shapes_ddpm"
    weights = load_file(shipped / "unet" / "diffusion_pytorch_model.safetensors")
    state = pipe.unet.state_dict()
    assert set(state) == set(weights) and all(torch.equal(state[k], weights[k]) for k in weights)
    config = DDIMScheduler.from_pretrained(shipped / "scheduler").config
    assert isinstance(pipe, DDIMPipeline) and pipe.scheduler.config.clip_sample == config.clip_sample
    hub_layout = tmp_path / "ddpm"  # google/ddpm-ema-celebahq-256 is a DDPMPipeline (DDPMScheduler) folder
    DDPMPipeline(unet=UNet2DModel.from_pretrained(tiny_ddpm_dir), scheduler=DDPMScheduler.from_pretrained(
        tiny_ddpm_dir)).save_pretrained(hub_layout)
    loaded = attnedit.load_pipeline(str(hub_layout), device="cpu")
    assert isinstance(loaded.scheduler, DDIMScheduler)
    assert all(torch.equal(v, UNet2DModel.from_pretrained(tiny_ddpm_dir).state_dict()[k])
               for k, v in loaded.unet.state_dict().items())
    for name in ("tiny_ddpm", "qwen_image_edit"):
        with pytest.raises(ConfigError, match=f"load_pipeline\\('{name}'\\)"):
            attnedit.load_pipeline(name)
    with pytest.raises(WeightsNotFoundError, match="not an existing directory"):
        attnedit.load_pipeline(str(tmp_path / "missing"))


def test_readme_snippets_that_download_run_on_tiny_models(piebench, tmp_path, monkeypatch, capsys):
    """Only model ids, data paths and step counts are swapped (hub ids -> tiny models saved
    with save_pretrained; LPIPS gets a seeded random backbone: no download here)."""
    from PIL import Image

    from attnedit.metrics import piebench_backbones
    from qwen_tiny import save_tiny_pipeline

    snippets = readme_snippets()
    assert len(snippets) == 4, "the section's python blocks: SAD, metrics of its images, bias-delta, PIE-Bench metrics"
    qwen = save_tiny_pipeline(tmp_path / "qwen")
    (tmp_path / "edited").mkdir()
    Image.open(piebench["files"]["000000000000"]).save(tmp_path / "edited" / "000000000000.png")
    Image.open(piebench["files"]["000000000000"]).resize((48, 40)).save(tmp_path / "source.png")
    load_lpips = piebench_backbones.load_lpips
    monkeypatch.setattr(piebench_backbones, "load_lpips", lambda net, weights, seed: load_lpips(net, "random", 7))
    monkeypatch.chdir(tmp_path)

    guided, metrics = snippets[2:]
    exec(_swap(guided, {'"Qwen/Qwen-Image-Edit"': repr(str(qwen)), "num_inference_steps=24": "num_inference_steps=2"}),
         {"__name__": "readme_guidance"})
    assert Image.open("edited.png").size[0] > 0

    exec(_swap(metrics, {'"data/PIE-Bench"': repr(str(piebench["root"]))}), {"__name__": "readme_metrics"})
    printed = capsys.readouterr().out
    assert "'psnr_unedit_part':" in printed and "LPIPS (background):" in printed
